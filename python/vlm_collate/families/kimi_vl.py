"""Kimi-VL: the shared step, reporting image counts; ``max_length`` fixes the length."""

from __future__ import annotations

from typing import Any

from ..options import seed_options
from ..pipeline.encode import Quirks, collate
from ..processor.family import family
from ..report import Batch


@family("kimi_vl", classes=("KimiVLProcessor",), model_types=("kimi_vl",))
def kimi_vl_collate_fn(
    examples: list, processor: Any, max_length: int | None = None, **options: Any
) -> Batch:
    """Batch for Kimi-VL: ``input_ids``, ``attention_mask``, ``labels``, and
    ``pixel_values``/``image_grid_hws`` and ``n_images_per_sample`` ``(B,)`` when the
    batch holds images.

    With ``max_length`` every batch is returned with exactly that many columns
    (``pad_to_max_length`` defaults to True here); an over-long sample follows
    ``on_overflow``. Options: see :class:`~vlm_collate.CollateOptions`.
    """
    if max_length is not None:
        options.setdefault("pad_to_max_length", True)
    opts = seed_options(max_length=max_length, **options)
    return collate(examples, processor, opts, Quirks(counts=True))
