"""InternVL: ``<IMG_CONTEXT>`` tiles between ``<img>`` and ``</img>``."""

from __future__ import annotations

from typing import Any

from ..options import seed_options
from ..pipeline.encode import collate
from ..processor.family import family
from ..report import Batch


@family("internvl", classes=("InternVLProcessor",), model_types=("internvl",))
def internvl_collate_fn(examples: list, processor: Any, **options: Any) -> Batch:
    """Batch for InternVL: ``input_ids``, ``attention_mask``, ``labels``, and
    ``pixel_values`` (one row per tile) when the batch holds images or videos.
    Options: see :class:`~vlm_collate.CollateOptions`."""
    return collate(examples, processor, seed_options(**options))
