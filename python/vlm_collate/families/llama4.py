"""Llama 4: tiles of ``<|patch|>`` tokens between ``<|image_start|>`` and ``<|image_end|>``."""

from __future__ import annotations

from typing import Any

from ..options import seed_options
from ..pipeline.encode import collate
from ..processor.family import family
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
    Options: see :class:`~vlm_collate.CollateOptions`."""
    return collate(examples, processor, seed_options(**options))
