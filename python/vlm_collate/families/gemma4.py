"""Gemma 4: images, videos and audio, each between its open and close tokens."""

from __future__ import annotations

from typing import Any

from ..options import seed_options
from ..pipeline.encode import collate
from ..processor.family import family
from ..report import Batch


@family("gemma4", classes=("Gemma4Processor",), model_types=("gemma4",))
def gemma4_collate_fn(examples: list, processor: Any, **options: Any) -> Batch:
    """Batch for Gemma 4: ``input_ids``, ``attention_mask``, ``labels``,
    ``mm_token_type_ids``, and ``pixel_values``/``image_position_ids`` (images),
    ``pixel_values_videos`` (videos) and ``input_features`` (audio) when present.
    Options: see :class:`~vlm_collate.CollateOptions`."""
    return collate(examples, processor, seed_options(**options))
