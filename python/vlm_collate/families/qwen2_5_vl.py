"""Qwen2-VL, Qwen2.5-VL and Qwen3-VL: images and videos, grids checked."""

from __future__ import annotations

from typing import Any

from ..options import seed_options
from ..pipeline.encode import Quirks, collate
from ..pipeline.fast_path import fast_call
from ..processor.family import family
from ..processor.profile import profile_of
from ..report import Batch


@family(
    "qwen2_5_vl",
    classes=("Qwen2_5_VLProcessor", "Qwen2VLProcessor", "Qwen3VLProcessor"),
    model_types=("qwen2_5_vl", "qwen2_vl", "qwen3_vl", "qwen3_vl_moe"),
    rope={
        "Qwen2VLProcessor": "qwen2_vl",
        "Qwen2_5_VLProcessor": "qwen2_5_vl",
        "Qwen3VLProcessor": "qwen3_vl",
        "qwen2_vl": "qwen2_vl",
        "qwen2_5_vl": "qwen2_5_vl",
        "qwen3_vl": "qwen3_vl",
        "qwen3_vl_moe": "qwen3_vl",
    },
    fast_path=True,
)
def qwen2_5_collate_fn(examples: list, processor: Any, **options: Any) -> Batch:
    """Batch for Qwen2.5-VL (and Qwen2-VL, Qwen3-VL): ``input_ids``, ``attention_mask``,
    ``labels``, ``mm_token_type_ids``, and ``pixel_values``/``image_grid_thw`` and
    ``pixel_values_videos``/``video_grid_thw`` when the batch holds images or videos.
    A text-only sample may sit in a batch with images. Options: see
    :class:`~vlm_collate.CollateOptions` (pre-shifted labels plus ``shift_labels`` by
    default, as the seed; ``shift=False`` for Hugging Face style)."""
    opts = seed_options(**options)
    # The fast path: the processor call reproduced in one pass where it applies.
    return collate(examples, processor, opts, Quirks(call=fast_call(profile_of(processor), opts)))
