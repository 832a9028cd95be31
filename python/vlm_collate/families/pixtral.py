"""Pixtral and Mistral Small 3.1 (Mistral3): ``[IMG]`` rows closed by ``[IMG_BREAK]``
and ``[IMG_END]``."""

from __future__ import annotations

from typing import Any

from ..options import seed_options
from ..pipeline.encode import Quirks, collate
from ..pipeline.fast_tiles import tiled_call
from ..processor.family import family
from ..processor.profile import profile_of
from ..report import Batch


@family("pixtral", classes=("PixtralProcessor",), model_types=("pixtral", "mistral3"))
def pixtral_collate_fn(examples: list, processor: Any, **options: Any) -> Batch:
    """Batch for Pixtral and Mistral 3: ``input_ids``, ``attention_mask``, ``labels``,
    and ``pixel_values``/``image_sizes`` when the batch holds images. Options: see
    :class:`~vlm_collate.CollateOptions`. The tiled fast path (one resize per image in
    Rust, see docs/fast_path.md) replaces the processor call where it reproduces it."""
    opts = seed_options(**options)
    return collate(examples, processor, opts, Quirks(call=tiled_call(profile_of(processor), opts)))
