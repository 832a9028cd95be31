"""Which collate function a processor gets, and a DataLoader-ready collator."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .models.default import default_collate_fn
from .models.kimi_k25 import kimi_k25_vl_collate_fn
from .models.kimi_vl import kimi_vl_collate_fn
from .models.nemotron_parse import nemotron_parse_collate_fn
from .models.phi4_mm import phi4_mm_collate_fn
from .models.qwen2_5_vl import qwen2_5_collate_fn
from .models.qwen3_omni import qwen3_omni_collate_fn

CollateFn = Callable[..., Any]

COLLATE_FNS: dict[str, CollateFn] = {
    "Qwen2_5_VLProcessor": qwen2_5_collate_fn,
    "Qwen2VLProcessor": qwen2_5_collate_fn,
    "Qwen3OmniMoeProcessor": qwen3_omni_collate_fn,
    "KimiVLProcessor": kimi_vl_collate_fn,
    "KimiK25Processor": kimi_k25_vl_collate_fn,
    "Kimi_K25Processor": kimi_k25_vl_collate_fn,
    "NemotronParseProcessor": nemotron_parse_collate_fn,
    "Phi4MultimodalProcessor": phi4_mm_collate_fn,
    "default": default_collate_fn,
}
"""Processor class name -> collate function (the seed's keys and more)."""

MODEL_TYPES: dict[str, CollateFn] = {
    "qwen2_vl": qwen2_5_collate_fn,
    "qwen2_5_vl": qwen2_5_collate_fn,
    "qwen3_omni_moe": qwen3_omni_collate_fn,
    "kimi_vl": kimi_vl_collate_fn,
    "kimi_k25": kimi_k25_vl_collate_fn,
    "nemotron_parse": nemotron_parse_collate_fn,
    "phi4_multimodal": phi4_mm_collate_fn,
}
"""Model type -> collate function, for processors whose class is generic or remote code."""


def _model_type(processor: Any) -> str | None:
    """The model type a processor declares (its own ``model_type``, or its config's)."""
    for owner in (processor, getattr(processor, "config", None)):
        value = getattr(owner, "model_type", None)
        if isinstance(value, str):
            return value
    return None


def get_collate_fn(processor: Any) -> CollateFn:
    """The collate function for ``processor``'s class or its nearest registered base
    class, else for the model type it declares; ``default`` when neither is registered."""
    for cls in type(processor).__mro__:
        if cls.__name__ in COLLATE_FNS:
            return COLLATE_FNS[cls.__name__]
    model_type = _model_type(processor)
    if model_type in MODEL_TYPES:
        return MODEL_TYPES[model_type]
    return COLLATE_FNS["default"]


class VLMCollator:
    """``collate_fn`` for ``DataLoader`` and ``data_collator`` for a Trainer.

    Holds the processor, the resolved collate function and its options; pickles
    for DataLoader workers started by spawn.
    """

    def __init__(self, processor: Any, collate_fn: CollateFn | str | None = None, **options: Any):
        self.processor = processor
        if isinstance(collate_fn, str):
            if collate_fn not in COLLATE_FNS:
                raise ValueError(
                    f"unknown collate function {collate_fn!r}; known: {sorted(COLLATE_FNS)}"
                )
            collate_fn = COLLATE_FNS[collate_fn]
        self.collate_fn = collate_fn or get_collate_fn(processor)
        self.options = options

    def __call__(self, examples: list) -> Any:
        return self.collate_fn(examples, self.processor, **self.options)

    def __repr__(self) -> str:
        name = type(self.processor).__name__
        return f"VLMCollator({name}, {self.collate_fn.__name__}, {self.options})"
