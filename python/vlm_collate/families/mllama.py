"""Llama 3.2 Vision (Mllama): one ``<|image|>`` per image and a cross-attention mask
whose token axis is its second."""

from __future__ import annotations

from typing import Any

from ..options import seed_options
from ..pipeline.encode import Quirks, collate
from ..pipeline.fast_tiles import tiled_call
from ..processor.family import family
from ..processor.profile import profile_of
from ..report import Batch


@family(
    "mllama",
    classes=("MllamaProcessor",),
    model_types=("mllama",),
    profile={"token_axes": {"cross_attention_mask": 1}},
)
def mllama_collate_fn(examples: list, processor: Any, **options: Any) -> Batch:
    """Batch for Llama 3.2 Vision: ``input_ids``, ``attention_mask``, ``labels``, and
    when the batch holds images ``pixel_values``, ``aspect_ratio_ids``,
    ``aspect_ratio_mask`` and ``cross_attention_mask`` ``(B, L, images, tiles)``, cut,
    shifted and padded along L with the ids. Options: see
    :class:`~vlm_collate.CollateOptions`. The tiled fast path
    (:mod:`vlm_collate.processor.tiles.mllama`) builds the batch without the processor
    call where it reproduces it."""
    opts = seed_options(**options)
    return collate(examples, processor, opts, Quirks(call=tiled_call(profile_of(processor), opts)))
