"""GLM-4.1V: ``<|image|>`` expanded between ``<|begin_of_image|>`` and ``<|end_of_image|>``."""

from __future__ import annotations

from typing import Any

from ..options import seed_options
from ..report import Batch
from .encode import collate
from .family import family


@family("glm4v", classes=("Glm4vProcessor",), model_types=("glm4v", "glm4v_moe"))
def glm4v_collate_fn(examples: list, processor: Any, **options: Any) -> Batch:
    """Batch for GLM-4.1V: ``input_ids``, ``attention_mask``, ``labels``,
    ``mm_token_type_ids``, and ``pixel_values``/``image_grid_thw`` and
    ``pixel_values_videos``/``video_grid_thw`` when present. Options: see
    :class:`~vlm_collate.CollateOptions`."""
    return collate(examples, processor, seed_options(**options))
