"""How many tokens an image or a video becomes under a processor's own resize rule,
from its size alone (no pixels processed): what length estimation and packing need."""

from __future__ import annotations

import inspect
import math
from typing import Any

from ..errors import OptionError, SampleError
from .profile import profile_of

PixelBudget = tuple[int, int]
"""``(min_pixels, max_pixels)`` of the processor's ``smart_resize`` rule."""


def pixel_budget(
    processor: Any, min_pixels: int | None = None, max_pixels: int | None = None
) -> PixelBudget | None:
    """The ``(min_pixels, max_pixels)`` the processor's resize rule runs with under a
    budget (a bound not given keeps the processor's own, clamped so min <= max), or
    None when no budget is given. A processor whose resize rule has no pixel budget
    (its image processor's ``size`` is not ``shortest_edge``/``longest_edge`` in pixels
    over a merge kernel, as in the Qwen2-VL family and GLM-4.1V) is an OptionError:
    a budget is never ignored silently."""
    if min_pixels is None and max_pixels is None:
        return None
    profile = profile_of(processor)
    ip = getattr(profile.processor, "image_processor", None)
    size = getattr(ip, "size", None) or {}
    low, high = size.get("shortest_edge"), size.get("longest_edge")
    if ip is None or getattr(ip, "merge_size", None) is None or not low or not high:
        raise OptionError(
            f"min_pixels/max_pixels: the image processor of {profile.processor_class} "
            f"({type(ip).__name__}) has no pixel-budget resize rule (the Qwen2-VL family and "
            "GLM-4.1V have one); set its own size options on the processor instead"
        )
    if min_pixels is None:
        min_pixels = min(int(low), int(max_pixels))
    if max_pixels is None:
        max_pixels = max(int(high), int(min_pixels))
    return int(min_pixels), int(max_pixels)


def own_budget(processor: Any) -> PixelBudget:
    """The ``(min_pixels, max_pixels)`` the processor's resize rule runs with by default
    (its image processor's ``size``); an OptionError where it has no such rule."""
    profile = profile_of(processor)
    size = getattr(getattr(profile.processor, "image_processor", None), "size", None) or {}
    high = size.get("longest_edge")
    if not high:
        pixel_budget(processor, max_pixels=1)  # raises the OptionError that explains
    return pixel_budget(processor, max_pixels=int(high))  # type: ignore[return-value]


def budget_covering(areas: list[int], budget: PixelBudget | None) -> PixelBudget | None:
    """A call-wide budget under which images already resized to exact grid sizes of
    ``areas`` pixels pass the resize rule unchanged (``budget`` widened to hold them)."""
    if not areas:
        return budget
    low, high = min(areas), max(areas)
    if budget is not None:
        low, high = min(low, budget[0]), max(high, budget[1])
    return low, high


def resized_image(processor: Any, image: Any, budget: PixelBudget) -> Any:
    """``image`` (an RGB PIL image) resized by the image processor's own ``resize`` (its
    resize rule under ``budget``, its resample) to the grid size the processor would
    give it: calling the processor on the result with a budget that holds its size
    gives the same pixels as calling it on ``image`` with ``budget``."""
    import numpy as np
    import torch
    from PIL import Image
    from transformers.image_utils import SizeDict

    ip = profile_of(processor).processor.image_processor
    tensor = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)[None]
    size = SizeDict(shortest_edge=int(budget[0]), longest_edge=int(budget[1]))
    factor = int(ip.patch_size) * int(ip.merge_size)
    out = ip.resize(tensor, size=size, resample=ip.resample, factor=factor)
    return Image.fromarray(out[0].permute(1, 2, 0).contiguous().numpy())


def budget_kwargs(budget: PixelBudget | None) -> dict[str, Any]:
    """The processor-call keywords that apply ``budget``: the image processor's
    documented ``size={"shortest_edge": min_pixels, "longest_edge": max_pixels}``."""
    if budget is None:
        return {}
    return {"images_kwargs": {"size": {"shortest_edge": budget[0], "longest_edge": budget[1]}}}


def image_tokens(processor: Any, height: int, width: int, budget: PixelBudget | None = None) -> int:
    """Tokens of one image of ``height`` x ``width`` pixels for ``processor`` (or its
    profile): the image processor's patch count over its merge kernel, under
    ``budget`` (see :func:`pixel_budget`) when given."""
    profile = profile_of(processor)
    ip = profile.processor.image_processor
    merge = profile.merge_kernel or (1, 1)
    kwargs = {} if budget is None else {"min_pixels": budget[0], "max_pixels": budget[1]}
    patches = int(ip.get_number_of_image_patches(height, width, kwargs))
    return patches // (merge[0] * merge[1])


def _video_processor(processor: Any, budget: str) -> Any:
    vp = getattr(profile_of(processor).processor, "video_processor", None)
    if vp is None or not hasattr(vp, "sample_frames"):
        raise OptionError(
            f"{budget}: {profile_of(processor).processor_class} has no video processor "
            f"that samples frames; drop the {budget} budget"
        )
    return vp


def sampled_frames(
    processor: Any,
    total: int,
    max_frames: int | None,
    fps: float | None = None,
    source_fps: float | None = None,
) -> list[int] | None:
    """The indices of the frames a video of ``total`` frames keeps under ``max_frames``
    and ``fps``, or None when it keeps them all (no budget, or no more frames than it
    allows).

    Under ``fps`` (frames per second kept; the video's own rate ``source_fps`` must be
    known, else a SampleError, as for a video it cannot sample): the indices of the
    video processor's own
    ``sample_frames(VideoMetadata(total_num_frames=total, fps=source_fps), fps=fps)``,
    with ``max_frames`` passed to it as its cap where its ``sample_frames`` takes one
    (the Qwen2-VL family's, which also applies its ``min_frames`` and rounds to its
    ``temporal_patch_size``), else applied to the frames it kept as below: the frames
    ``processor(videos=..., do_sample_frames=True, fps=fps, video_metadata=...)`` keeps.

    Under ``max_frames`` alone: ``num_frames`` = ``max_frames`` rounded down to a multiple
    of the video processor's ``temporal_patch_size`` (at least one such multiple), and the
    indices are those of the video processor's own ``sample_frames`` with ``num_frames`` on
    metadata without a frame rate (``VideoMetadata(total_num_frames=total)``): the frames
    a call ``processor(videos=..., do_sample_frames=True, num_frames=num_frames)`` keeps,
    uniform over the video (``arange(0, total, total / num_frames)``, truncated). A
    processor without a video processor is an OptionError."""
    from transformers.video_utils import VideoMetadata

    if fps is not None:
        vp = _video_processor(processor, "fps")
        if source_fps is None:
            raise SampleError(
                "fps: the video's source frame rate is unknown; give the video item's "
                "video_fps (or metadata={'fps': ...})"
            )
        metadata = VideoMetadata(total_num_frames=total, fps=float(source_fps))
        kwargs: dict[str, Any] = {"fps": fps}
        capped = (
            max_frames is not None
            and "max_frames" in inspect.signature(vp.sample_frames).parameters
        )
        if capped:
            kwargs["max_frames"] = max_frames
        try:
            indices = [int(i) for i in vp.sample_frames(metadata, **kwargs)]
        except (ValueError, ZeroDivisionError) as error:
            raise SampleError(
                f"fps={fps}: the video processor cannot sample this video of {total} frames "
                f"at {source_fps} fps ({error}); give more frames or a higher fps"
            ) from None
        if not indices:
            raise SampleError(
                f"fps={fps}: the video processor keeps no frame of this video of {total} "
                f"frames at {source_fps} fps; give more frames or a higher fps"
            )
        if max_frames is not None and not capped:
            inner = sampled_frames(processor, len(indices), max_frames)
            indices = indices if inner is None else [indices[i] for i in inner]
        return None if indices == list(range(total)) else indices
    if max_frames is None or total <= max_frames:
        return None
    vp = _video_processor(processor, "max_frames")
    temporal = int(getattr(vp, "temporal_patch_size", 1) or 1)
    num_frames = max(temporal, max_frames // temporal * temporal)
    if num_frames >= total:
        return None
    indices = vp.sample_frames(VideoMetadata(total_num_frames=total), num_frames=num_frames)
    return [int(i) for i in indices]


def video_metadata(total: int, source_fps: float, kept: list[int] | None) -> dict[str, Any]:
    """The metadata of a video of ``total`` frames at ``source_fps`` of which the frames
    ``kept`` (all when None) are given, in ``VideoMetadata``'s names: what the processor
    reads ``second_per_grid_ts`` (and Qwen3-VL its timestamps) from."""
    return {
        "total_num_frames": int(total),
        "fps": float(source_fps),
        "frames_indices": list(range(total)) if kept is None else list(kept),
    }


def video_tokens(
    processor: Any,
    frames: int,
    height: int,
    width: int,
    max_frames: int | None = None,
    fps: float | None = None,
    source_fps: float | None = None,
) -> int:
    """Tokens of one video of ``frames`` frames of ``height`` x ``width`` pixels (the Qwen
    video processor's rule), after sampling under ``max_frames`` and ``fps`` (a video at
    ``source_fps`` frames per second; :func:`sampled_frames`)."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    kept = sampled_frames(processor, frames, max_frames, fps, source_fps)
    if kept is not None:
        frames = len(kept)
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
