"""How many tokens an image or a video becomes under a processor's own resize rule,
from its size alone (no pixels processed): what length estimation and packing need."""

from __future__ import annotations

import math
from typing import Any

from .profile import profile_of


def image_tokens(processor: Any, height: int, width: int) -> int:
    """Tokens of one image of ``height`` x ``width`` pixels for ``processor`` (or its
    profile): the image processor's patch count over its merge kernel."""
    profile = profile_of(processor)
    ip = profile.processor.image_processor
    merge = profile.merge_kernel or (1, 1)
    patches = int(ip.get_number_of_image_patches(height, width, {}))
    return patches // (merge[0] * merge[1])


def video_tokens(processor: Any, frames: int, height: int, width: int) -> int:
    """Tokens of one video of ``frames`` frames of ``height`` x ``width`` pixels (the Qwen
    video processor's rule; frames are not sampled)."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    vp = profile_of(processor).processor.video_processor
    patch, merge = int(vp.patch_size), int(vp.merge_size)
    temporal = int(getattr(vp, "temporal_patch_size", 1) or 1)
    factor = patch * merge
    size = vp.size
    max_pixels = size["longest_edge"]
    if getattr(vp, "cap_pixels_per_frame", False):
        total = int(vp.max_video_tokens * factor * factor * 0.9)
        padded = math.ceil(frames / temporal) * temporal
        max_pixels = max(
            min(max_pixels, total * temporal // padded), int(size["shortest_edge"] * 1.05)
        )
    h, w = smart_resize(height, width, factor, size["shortest_edge"], max_pixels)
    return math.ceil(frames / temporal) * (h // factor) * (w // factor)
