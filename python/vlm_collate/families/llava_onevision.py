"""LLaVA-OneVision: anyres ``<image>`` runs and ``<video>`` runs."""

from __future__ import annotations

from typing import Any

from ..options import seed_options
from ..pipeline.encode import Quirks, collate
from ..pipeline.fast_tiles import tiled_call
from ..processor.family import family
from ..processor.profile import profile_of
from ..report import Batch


@family("llava_onevision", classes=("LlavaOnevisionProcessor",), model_types=("llava_onevision",))
def llava_onevision_collate_fn(examples: list, processor: Any, **options: Any) -> Batch:
    """Batch for LLaVA-OneVision: ``input_ids``, ``attention_mask``, ``labels``, and
    ``pixel_values``/``image_sizes``/``batch_num_images`` (images) and
    ``pixel_values_videos`` (videos) when present. Options: see
    :class:`~vlm_collate.CollateOptions`."""
    opts = seed_options(**options)
    # The tiled fast path: the processor call reproduced in one pass where it applies.
    return collate(examples, processor, opts, Quirks(call=tiled_call(profile_of(processor), opts)))
