"""Pixtral and Mistral Small 3.1 (Mistral3): ``[IMG]`` rows closed by ``[IMG_BREAK]``
and ``[IMG_END]``."""

from __future__ import annotations

from typing import Any

from ..options import seed_options
from ..pipeline.encode import collate
from ..processor.family import family
from ..report import Batch


@family("pixtral", classes=("PixtralProcessor",), model_types=("pixtral", "mistral3"))
def pixtral_collate_fn(examples: list, processor: Any, **options: Any) -> Batch:
    """Batch for Pixtral and Mistral 3: ``input_ids``, ``attention_mask``, ``labels``,
    and ``pixel_values``/``image_sizes`` when the batch holds images. Options: see
    :class:`~vlm_collate.CollateOptions`."""
    return collate(examples, processor, seed_options(**options))
