"""Llama 4: tiles of ``<|patch|>`` tokens between ``<|image_start|>`` and ``<|image_end|>``."""

from __future__ import annotations

from typing import Any

from ..options import seed_options
from ..pipeline.encode import Quirks, collate
from ..pipeline.fast_tiles import tiled_call
from ..processor.family import family
from ..processor.profile import profile_of
from ..report import Batch


@family(
    "llama4",
    classes=("Llama4Processor",),
    model_types=("llama4",),
    profile={"expanded": {"image": "<|patch|>"}},
)
def llama4_collate_fn(examples: list, processor: Any, **options: Any) -> Batch:
    """Batch for Llama 4: ``input_ids``, ``attention_mask``, ``labels`` and
    ``pixel_values`` (one row per tile and global view) when the batch holds images.
    Options: see :class:`~vlm_collate.CollateOptions`. The tiled fast path
    (:mod:`vlm_collate.processor.tiles.llama4`) builds the batch without the processor
    call where it reproduces it."""
    opts = seed_options(**options)
    return collate(examples, processor, opts, Quirks(call=tiled_call(profile_of(processor), opts)))
