"""Which collate function a processor gets, and a DataLoader-ready collator."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from .errors import OptionError
from .models.default import default_collate_fn
from .models.kimi_k25 import kimi_k25_vl_collate_fn
from .models.kimi_vl import kimi_vl_collate_fn
from .models.nemotron_parse import nemotron_parse_collate_fn
from .models.phi4_mm import phi4_mm_collate_fn
from .models.qwen2_5_vl import qwen2_5_collate_fn
from .models.qwen3_omni import qwen3_omni_collate_fn
from .options import CollateOptions, as_dict, collate_options, unknown_options_error

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


def _own_parameters(collate_fn: CollateFn) -> tuple[list[str], bool]:
    """The keyword parameters of ``collate_fn`` after ``(examples, processor)``, and
    whether it takes ``**options``."""
    try:
        parameters = list(inspect.signature(collate_fn).parameters.values())[2:]
    except (TypeError, ValueError):
        return [], True
    named = [
        p.name
        for p in parameters
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "options"
    ]
    return named, any(p.kind == p.VAR_KEYWORD for p in parameters)


class VLMCollator:
    """``collate_fn`` for ``DataLoader`` and ``data_collator`` for a Hugging Face
    ``Trainer`` or TRL's ``SFTTrainer``: Hugging Face style batches (unshifted
    ``labels``; the model's loss shifts) unless ``shift=True`` is passed.

    ``options`` (a :class:`~vlm_collate.CollateOptions`) and keyword options are
    checked here, when the collator is built: an unknown name or a bad value is an
    :class:`~vlm_collate.errors.OptionError`. Keywords the collate function itself
    declares (``use_audio_in_video``, ``task_prompt``, ``pixel_dtype``) pass through.
    Holds the processor, the resolved collate function and the options; pickles for
    DataLoader workers started by spawn.
    """

    def __init__(
        self,
        processor: Any,
        collate_fn: CollateFn | str | None = None,
        *,
        options: CollateOptions | None = None,
        **kwargs: Any,
    ) -> None:
        self.processor = processor
        if isinstance(collate_fn, str):
            if collate_fn not in COLLATE_FNS:
                raise OptionError(
                    f"unknown collate function {collate_fn!r}; known: {sorted(COLLATE_FNS)}"
                )
            collate_fn = COLLATE_FNS[collate_fn]
        if collate_fn is not None and not callable(collate_fn):
            raise OptionError(
                f"collate_fn must be a function or a name in COLLATE_FNS, got {collate_fn!r}"
            )
        self.collate_fn: CollateFn = collate_fn or get_collate_fn(processor)
        own, takes_options = _own_parameters(self.collate_fn)
        shared_names = CollateOptions.names() if takes_options else ()
        if options is not None and not takes_options:
            raise OptionError(f"{self.collate_fn.__name__} takes no collate options")
        unknown = [k for k in kwargs if k not in shared_names and k not in own]
        if unknown:
            raise unknown_options_error(unknown, [*shared_names, *own])
        shared = {k: v for k, v in kwargs.items() if k in shared_names}
        if options is not None or shared or takes_options:
            if takes_options and options is None:
                shared.setdefault("shift", False)
            checked = collate_options(options, **shared)  # validated now, not at the first batch
            explicit = as_dict(checked) if options is not None else shared
            shared = {k: getattr(checked, k) for k in explicit}
        self.options: dict[str, Any] = {**shared, **{k: v for k, v in kwargs.items() if k in own}}

    def __call__(self, examples: list) -> Any:
        return self.collate_fn(examples, self.processor, **self.options)

    def __repr__(self) -> str:
        name = type(self.processor).__name__
        return f"VLMCollator({name}, {self.collate_fn.__name__}, {self.options})"
