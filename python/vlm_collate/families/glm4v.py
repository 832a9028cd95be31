"""GLM-4.1V: ``<|image|>`` expanded between ``<|begin_of_image|>`` and ``<|end_of_image|>``,
for images and for each frame of a video."""

from __future__ import annotations

from typing import Any

from ..options import seed_options
from ..pipeline.encode import Quirks, collate
from ..pipeline.fast_path import fast_call
from ..processor.family import family
from ..processor.profile import profile_of
from ..report import Batch


@family(
    "glm4v",
    classes=("Glm4vProcessor",),
    model_types=("glm4v", "glm4v_moe"),
    profile={"expanded": {"video": "<|image|>"}},
    fast_path=True,
)
def glm4v_collate_fn(examples: list, processor: Any, **options: Any) -> Batch:
    """Batch for GLM-4.1V: ``input_ids``, ``attention_mask``, ``labels``,
    ``mm_token_type_ids``, and ``pixel_values``/``image_grid_thw`` and
    ``pixel_values_videos``/``video_grid_thw`` when present. Options: see
    :class:`~vlm_collate.CollateOptions`. A video's frames are taken as given (the
    processor would otherwise ask for the metadata of a decoded file to resample them).
    Images and videos take the fast path (docs/fast_path.md)."""
    opts = seed_options(**options)
    quirks = Quirks(
        processor_kwargs={"do_sample_frames": False}, call=fast_call(profile_of(processor), opts)
    )
    return collate(examples, processor, opts, quirks)
