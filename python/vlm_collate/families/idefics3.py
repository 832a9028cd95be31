"""Idefics3 and SmolVLM: sub-images between ``<fake_token_around_image>`` tokens with
row/column markers, then the global image."""

from __future__ import annotations

from typing import Any

from ..options import seed_options
from ..pipeline.encode import Quirks, collate
from ..pipeline.fast_tiles import tiled_call
from ..processor.family import family
from ..processor.profile import profile_of
from ..report import Batch


@family(
    "idefics3",
    classes=("Idefics3Processor", "SmolVLMProcessor"),
    model_types=("idefics3", "smolvlm"),
)
def idefics3_collate_fn(examples: list, processor: Any, **options: Any) -> Batch:
    """Batch for Idefics3 and SmolVLM: ``input_ids``, ``attention_mask``, ``labels``,
    and ``pixel_values``/``pixel_attention_mask`` when the batch holds images (or
    SmolVLM videos). Truncation keeps or drops an image's whole block (every
    sub-image, row/column marker and the global image). Options: see
    :class:`~vlm_collate.CollateOptions`. The tiled fast path (resizes, sub-images and
    the global image in Rust, see docs/fast_path.md) replaces the processor call where it
    reproduces it; batches with videos call the processor."""
    opts = seed_options(**options)
    return collate(examples, processor, opts, Quirks(call=tiled_call(profile_of(processor), opts)))
