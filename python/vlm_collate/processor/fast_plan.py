"""The fast-path plan: whether the fast path reproduces a processor's call, and what it
needs of the processor (the resize rule's limits, the patch geometry, the byte table of
its own rescale and normalise, token ids), read once and kept on the profile.

The fast path applies to transformers' own classes of a family that declares it
(``fast_path=True`` in its registration: Qwen2-VL, Qwen2.5-VL, Qwen3-VL, GLM-4.1V,
Gemma 3), not to a subclass, and only with image-processor settings it reproduces
(what differs between the families is one row of :data:`FAMILY_FACTS`); otherwise the reason is
logged once and the processor is called. Videos have their own plan (:class:`VideoPlan`,
from the video processor): where it does not apply, batches with videos call the
processor (the reason logged once).
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any

import torch

from .profile import ProcessorProfile, profile_of

logger = logging.getLogger("vlm_collate")

IMAGE_PROCESSOR = (
    "Qwen2VLImageProcessor",
    "transformers.models.qwen2_vl.image_processing_qwen2_vl",
)
"""The image processor it reproduces: transformers' torchvision one (the default in 5.x)."""

VIDEO_PROCESSOR = (
    "Qwen2VLVideoProcessor",
    "transformers.models.qwen2_vl.video_processing_qwen2_vl",
)
"""The video processor it reproduces (Qwen2-VL's and Qwen2.5-VL's)."""

QWEN3_VIDEO_PROCESSOR = (
    "Qwen3VLVideoProcessor",
    "transformers.models.qwen3_vl.video_processing_qwen3_vl",
)
"""Qwen3-VL's video processor: frames sampled by fps (its own ``sample_frames``), its own
``smart_resize`` (frames counted against the limits), frame timestamps in the text."""

GLM_VIDEO_PROCESSOR = ("Glm4vVideoProcessor", "transformers.models.glm4v.video_processing_glm4v")
"""GLM-4.1V's video processor: frames sampled by fps from the metadata's rate, GLM's
``smart_resize``, each frame group written as an image block and its second."""

_BICUBIC = 3  # PIL.Image.Resampling.BICUBIC, PILImageResampling.BICUBIC
_BILINEAR = 2  # PIL.Image.Resampling.BILINEAR
_INTERPOLATION = {_BICUBIC: "bicubic", _BILINEAR: "bilinear"}


@dataclass(frozen=True)
class FamilyFacts:
    """What differs between the families the fast path reproduces: the image processor
    class (name, module), the one resample reproduced, the resize rule (``"qwen"`` and
    ``"glm"``: each family's ``smart_resize`` over pixel limits; ``"fixed"``: ``size``'s
    height and width), whether ``pixel_values`` is cut into patches (rows of
    ``3·temporal·patch²``) or channels-first images, the key of the token types, and the
    image-processor methods whose replacement on the instance turns the fast path off."""

    image_processor: tuple[str, str]
    resample: int
    rule: str
    patchified: bool
    type_key: str = "mm_token_type_ids"
    methods: tuple[str, ...] = ("resize", "patchify", "rescale_and_normalize")
    frames_as_given: bool = False  # the family calls the processor with do_sample_frames=False


FAMILY_FACTS: dict[str, FamilyFacts] = {
    "qwen2_5_vl": FamilyFacts(IMAGE_PROCESSOR, _BICUBIC, "qwen", patchified=True),
    "glm4v": FamilyFacts(
        ("Glm4vImageProcessor", "transformers.models.glm4v.image_processing_glm4v"),
        _BICUBIC,
        "glm",
        patchified=True,
        frames_as_given=True,  # glm4v_collate_fn: processor_kwargs do_sample_frames=False
    ),
    "gemma3": FamilyFacts(
        ("Gemma3ImageProcessor", "transformers.models.gemma3.image_processing_gemma3"),
        _BILINEAR,
        "fixed",
        patchified=False,
        type_key="token_type_ids",
        methods=(
            "resize",
            "rescale_and_normalize",
            "pan_and_scan_batched",
            "_process_images_for_pan_and_scan",
        ),
    ),
}
"""Family name -> what its fast path does differently (families with ``fast_path=True``)."""


@dataclass(frozen=True)
class VideoPlan:
    """What the fast path needs of a video processor: the resize rule's limits (and the
    per-frame cap when ``cap_pixels_per_frame`` is on), the patch geometry, its own byte
    table, the video token id, and whether the processor returns ``second_per_grid_ts``."""

    min_pixels: int
    max_pixels: int
    cap_pixels_per_frame: bool
    max_video_tokens: int
    patch_size: int
    merge_size: int
    temporal_patch_size: int
    table: torch.Tensor  # (768,) float32
    video_token_id: int
    second_per_grid_ts: bool
    # Qwen3-VL: frames sampled as its video processor samples them (when it does) and
    # each temporal group's "<t seconds>" + vision start/end written into the text.
    rule: str = "qwen2"  # "qwen2", "qwen3" or "glm" (their smart_resize, sampling, times)
    sample_frames: bool = False
    video_token: str = ""
    vision_tokens: tuple[str, str] = ("", "")  # (start, end) around each temporal group
    frame_token: str = ""  # GLM-4.1V: each group's token (its image token), else video_token


@dataclass(frozen=True)
class PanAndScan:
    """Gemma 3's pan-and-scan as its processor call runs it (the values its
    ``_merge_kwargs`` passes the image processor): each image is followed by crops of the
    original, cut by the aspect ratio (:func:`pan_and_scan_crops`), each resized to
    ``size``; its text says so (``intro``, the image's block, ``between``, then one block
    per crop joined by a space)."""

    min_crop_size: int
    max_num_crops: int
    min_ratio_to_activate: float
    intro: str = "Here is the original image "
    between: str = " and here are some crops to help you see better "


def pan_and_scan_crops(
    height: int, width: int, pan: PanAndScan
) -> list[tuple[int, int, int, int]] | None:
    """The ``(top, left, height, width)`` crops ``Gemma3ImageProcessor.pan_and_scan_batched``
    cuts from an image of ``height`` x ``width`` pixels (the same arithmetic: crops along
    the longer side, their count the rounded aspect ratio within ``[2, max_num_crops]``
    and at most ``floor(side / min_crop_size)``, none below ``min_ratio_to_activate`` or
    when a crop would be smaller than ``min_crop_size``; the last crop ends at the
    image's edge, as its slice does). None when a crop would be empty (the processor
    then fails, and the batch calls it so that its error is reported)."""
    if width >= height:
        if width / height < pan.min_ratio_to_activate:
            return []
        count_w = int(math.floor(width / height + 0.5))
        count_w = min(int(math.floor(width / pan.min_crop_size)), count_w)
        count_w = min(pan.max_num_crops, max(2, count_w))
        count_h = 1
    else:
        if height / width < pan.min_ratio_to_activate:
            return []
        count_h = int(math.floor(height / width + 0.5))
        count_h = min(int(math.floor(height / pan.min_crop_size)), count_h)
        count_h = min(pan.max_num_crops, max(2, count_h))
        count_w = 1
    crop_w = int(math.ceil(width / count_w))
    crop_h = int(math.ceil(height / count_h))
    if min(crop_w, crop_h) < pan.min_crop_size:
        return []
    crops = [
        (top, left, min(crop_h, height - top), min(crop_w, width - left))
        for top in range(0, crop_h * count_h, crop_h)
        for left in range(0, crop_w * count_w, crop_w)
    ]
    if any(h <= 0 or w <= 0 for _, _, h, w in crops):
        return None
    return crops


@dataclass(frozen=True)
class FastPlan:
    """What the fast path needs of a processor, read once: the resize rule's limits, the
    patch geometry, the byte table, the token ids and the output options."""

    min_pixels: int
    max_pixels: int
    patch_size: int
    merge_size: int
    temporal_patch_size: int
    table: torch.Tensor  # (768,) float32, byte -> rescaled and normalised value
    image_token_id: int
    type_ids: tuple[tuple[int, tuple[int, ...]], ...]  # (type, ids) for mm_token_type_ids
    mm_token_type_ids: bool
    pad_id: int
    video: VideoPlan | None = None  # None: batches with videos call the processor
    rule: str = "qwen"  # FamilyFacts.rule
    interpolation: str = "bicubic"
    patchified: bool = True
    fixed_size: tuple[int, int] | None = None  # (height, width) of the "fixed" rule
    tokens_per_image: int = 0  # a fixed count per image (not patchified), else 0
    placeholder: tuple[str, str] | None = None  # text replaced before tokenizing
    type_key: str = "mm_token_type_ids"
    video_span: tuple[int, int] | None = None  # image tokens between these ids are type 2
    pan_and_scan: PanAndScan | None = None  # Gemma 3: crops the processor call adds, else None


def _is_class(obj: Any, name: str, module: str) -> bool:
    cls = type(obj)
    return cls.__name__ == name and cls.__module__ == module


def _unsupported(profile: ProcessorProfile) -> str | None:
    """Why the fast path does not reproduce the profile's processor, or None when it does."""
    processor = profile.processor
    cls, family = type(processor), profile.family
    if family is None or not family.fast_path:
        return f"the fast path does not cover {cls.__name__}"
    if cls.__name__ not in family.processor_classes or not cls.__module__.startswith(
        "transformers."
    ):
        return (
            f"{cls.__name__} is not one of transformers' "
            f"{', '.join(family.processor_classes)} (subclass or other class)"
        )
    facts = FAMILY_FACTS.get(family.name)
    if facts is None:
        return f"the fast path has no facts for family {family.name}"
    ip = getattr(processor, "image_processor", None)
    if ip is None or not _is_class(ip, *facts.image_processor):
        name = facts.image_processor[0]
        return f"its image processor {type(ip).__name__} is not transformers' {name}"
    if not getattr(ip, "do_resize", False):
        return "do_resize=False"
    if int(getattr(ip, "resample", -1)) != facts.resample:
        interpolation = _INTERPOLATION[facts.resample]
        return f"resample={ip.resample!r} (only {interpolation} is reproduced)"
    size = getattr(ip, "size", None)
    if facts.rule == "fixed":
        if not size or not size.get("height") or not size.get("width"):
            return f"size={size!r} has no height/width"
    elif not size or not size.get("shortest_edge") or not size.get("longest_edge"):
        return f"size={size!r} has no shortest_edge/longest_edge pixel limits"
    if getattr(ip, "device", None) not in (None, "cpu"):
        return f"the image processor runs on {ip.device}"
    for attribute in (*facts.methods, "_preprocess", "preprocess"):
        if attribute in vars(ip):
            return f"the image processor's {attribute} is replaced on the instance"
    if family.name == "gemma3":
        reason = _gemma3_unsupported(processor)
        if reason is not None:
            return reason
    if not hasattr(processor, "image_token") or getattr(processor, "tokenizer", None) is None:
        return "it has no image_token or tokenizer"
    if getattr(processor.tokenizer, "pad_token_id", None) is None:
        return "its tokenizer has no pad token"
    return None


def _video_unsupported(processor: Any) -> str | None:
    """Why the fast path does not reproduce the processor's videos, or None when it does."""
    vp = getattr(processor, "video_processor", None)
    qwen3 = vp is not None and _is_class(vp, *QWEN3_VIDEO_PROCESSOR)
    glm = vp is not None and _is_class(vp, *GLM_VIDEO_PROCESSOR)
    if vp is None or not (_is_class(vp, *VIDEO_PROCESSOR) or qwen3 or glm):
        return (
            f"its video processor {type(vp).__name__} is not transformers' "
            f"{VIDEO_PROCESSOR[0]}, {QWEN3_VIDEO_PROCESSOR[0]} or {GLM_VIDEO_PROCESSOR[0]}"
        )
    if qwen3 or glm:
        reason = _timed_video_unsupported(processor)
        if reason is not None:
            return reason
    qwen3 = qwen3 or glm  # both sample frames themselves
    if not getattr(vp, "do_resize", False):
        return "video do_resize=False"
    if int(getattr(vp, "resample", -1)) != _BICUBIC:
        return f"video resample={vp.resample!r} (only bicubic is reproduced)"
    if getattr(vp, "do_sample_frames", False) and not qwen3:
        return "do_sample_frames=True (frames sampled by the processor)"
    size = getattr(vp, "size", None)
    if not size or not size.get("shortest_edge") or not size.get("longest_edge"):
        return f"video size={size!r} has no shortest_edge/longest_edge pixel limits"
    if getattr(vp, "device", None) not in (None, "cpu"):
        return f"the video processor runs on {vp.device}"
    for attribute in (
        "resize",
        "patchify",
        "rescale_and_normalize",
        "_preprocess",
        "preprocess",
        "sample_frames",
        "_decode_and_sample_videos",
        "_prepare_input_videos",
    ):
        if attribute in vars(vp):
            return f"the video processor's {attribute} is replaced on the instance"
    if getattr(processor, "video_token_id", None) is None:
        return "it has no video_token_id"
    return None


def _timed_video_unsupported(processor: Any) -> str | None:
    """Why the fast path does not reproduce Qwen3-VL's or GLM-4.1V's videos (their
    processors' timestamps and their video processors' sampling), or None when it does."""
    vp = processor.video_processor
    glm = _is_class(vp, *GLM_VIDEO_PROCESSOR)
    if not getattr(processor, "video_token", None):
        return "it has no video_token"
    if not glm and not hasattr(processor, "vision_end_token"):
        return "it has no vision_start/end tokens"
    for attribute in (
        "replace_video_token",
        "_calculate_timestamps",
        "replace_frame_token_id",
        "_process_videos",
    ):
        if attribute in vars(processor):
            return f"the processor's {attribute} is replaced on the instance"
    if glm:
        image = getattr(processor, "image_token", None)
        expected = f"<|begin_of_image|>{image}<|end_of_image|>0"
        if not image or processor.replace_frame_token_id(0.5, num_image_tokens=1) != expected:
            return "its frame block is not <|begin_of_image|>, the image token, <|end_of_image|>"
        return None
    sampling = getattr(vp, "do_sample_frames", False)
    if sampling and getattr(vp, "num_frames", None) is not None and getattr(vp, "fps", None):
        return "both num_frames and fps set (the video processor refuses them together)"
    return None


def _video_plan(processor: Any) -> VideoPlan | None:
    reason = _video_unsupported(processor)
    table = None if reason else _table(processor.video_processor)
    if reason is None and table is None:
        reason = "video do_rescale=False and do_normalize=False (uint8 pixel values)"
    if reason is not None:
        logger.info(
            "fast path off for %s videos: %s; batches with videos use the processor call",
            type(processor).__name__,
            reason,
        )
        return None
    vp = processor.video_processor
    return VideoPlan(
        min_pixels=int(vp.size["shortest_edge"]),
        max_pixels=int(vp.size["longest_edge"]),
        cap_pixels_per_frame=bool(getattr(vp, "cap_pixels_per_frame", None)),
        max_video_tokens=int(getattr(vp, "max_video_tokens", 0) or 0),
        patch_size=int(vp.patch_size),
        merge_size=int(vp.merge_size),
        temporal_patch_size=int(vp.temporal_patch_size),
        table=table,
        video_token_id=int(processor.video_token_id),
        second_per_grid_ts="second_per_grid_ts" in processor.model_input_names,
        **_qwen3_video_fields(processor),
    )


def _qwen3_video_fields(processor: Any) -> dict[str, Any]:
    """The video plan's Qwen3-VL fields (sampling, timestamps), or none for Qwen2-VL's."""
    vp = processor.video_processor
    if _is_class(vp, *GLM_VIDEO_PROCESSOR):
        facts = FAMILY_FACTS["glm4v"]
        return {
            "rule": "glm",
            "sample_frames": bool(getattr(vp, "do_sample_frames", False))
            and not facts.frames_as_given,
            "video_token": str(processor.video_token),
            "vision_tokens": ("<|begin_of_image|>", "<|end_of_image|>"),
            "frame_token": str(processor.image_token),
        }
    if not _is_class(vp, *QWEN3_VIDEO_PROCESSOR):
        return {}
    return {
        "rule": "qwen3",
        "sample_frames": bool(getattr(vp, "do_sample_frames", False)),
        "video_token": str(processor.video_token),
        "vision_tokens": (str(processor.vision_start_token), str(processor.vision_end_token)),
    }


def _hashable(value: Any) -> Any:
    """A list of per-channel values as the tuple the processor's cached fusion takes."""
    return tuple(value) if isinstance(value, list) else value


def _table(ip: Any) -> torch.Tensor | None:
    """The processor's own rescale and normalise of every byte of every channel, or None
    when its output is not float32 (neither rescale nor normalise)."""
    values = torch.arange(256, dtype=torch.uint8).view(1, 1, 1, 256).expand(1, 3, 1, 256)
    out = ip.rescale_and_normalize(
        values.contiguous(),
        ip.do_rescale,
        ip.rescale_factor,
        ip.do_normalize,
        _hashable(ip.image_mean),
        _hashable(ip.image_std),
    )
    if out.dtype != torch.float32:
        return None
    return out.reshape(3 * 256).contiguous()


def _plan(profile: ProcessorProfile) -> FastPlan | None:
    processor = profile.processor
    reason = _unsupported(profile)
    table = None if reason else _table(processor.image_processor)
    if reason is None and table is None:
        reason = "do_rescale=False and do_normalize=False (uint8 pixel values)"
    if reason is not None:
        logger.info(
            "fast path off for %s: %s; using the processor call", type(processor).__name__, reason
        )
        return None
    ip = processor.image_processor
    facts = FAMILY_FACTS[profile.family.name]
    extra = _family_fields(processor, facts)
    type_ids = extra.pop("type_ids", None) or tuple(
        (
            t,
            tuple(
                int(i)
                for i in (getattr(processor, f"{kind}_token_ids", None) or [])
                if i is not None
            ),
        )
        for t, kind in ((1, "image"), (2, "video"), (3, "audio"))
    )
    return FastPlan(
        min_pixels=int(ip.size.get("shortest_edge") or 0),
        max_pixels=int(ip.size.get("longest_edge") or 0),
        patch_size=int(getattr(ip, "patch_size", 1) or 1),
        merge_size=int(getattr(ip, "merge_size", 1) or 1),
        temporal_patch_size=int(getattr(ip, "temporal_patch_size", 1) or 1),
        table=table,
        image_token_id=int(extra.pop("image_token_id", processor.image_token_id)),
        type_ids=type_ids,
        mm_token_type_ids=bool(getattr(processor, "return_mm_token_type_ids", False)),
        pad_id=profile.require_pad_id(),
        video=_video_plan(processor),
        rule=facts.rule,
        interpolation=_INTERPOLATION[facts.resample],
        patchified=facts.patchified,
        type_key=facts.type_key,
        **extra,
    )


_PAN_AND_SCAN_KEYS = (
    "do_pan_and_scan",
    "pan_and_scan_min_crop_size",
    "pan_and_scan_max_num_crops",
    "pan_and_scan_min_ratio_to_activate",
)


def _gemma3_images_kwargs(processor: Any) -> dict[str, Any]:
    """The image settings Gemma 3's processor call uses when the caller passes none: its
    ``_merge_kwargs`` (its class's ``images_kwargs``, ``do_pan_and_scan=False`` and the
    pan-and-scan sizes, or the instance's own, win over the image processor's
    attributes) over the image processor's attributes for the pan-and-scan keys."""
    ip = processor.image_processor
    merged = processor._merge_kwargs(tokenizer_init_kwargs=processor.tokenizer.init_kwargs)
    kwargs = dict(merged["images_kwargs"])
    for key in _PAN_AND_SCAN_KEYS:
        kwargs.setdefault(key, getattr(ip, key, None))
    return kwargs


def _gemma3_pan_and_scan(processor: Any) -> PanAndScan | str | None:
    """Gemma 3's pan-and-scan as its processor call runs it, None when the call does not
    pan and scan, or why the fast path does not reproduce it."""
    kwargs = _gemma3_images_kwargs(processor)
    if not kwargs["do_pan_and_scan"]:
        return None
    size, count, ratio = (kwargs[key] for key in _PAN_AND_SCAN_KEYS[1:])
    valid = (
        isinstance(size, int)
        and isinstance(count, int)
        and isinstance(ratio, (int, float))
        and not isinstance(size, bool)
        and not isinstance(count, bool)
        and size > 0
        and count > 0
    )
    if not valid:
        return (
            f"pan-and-scan with min_crop_size={size!r}, max_num_crops={count!r}, "
            f"min_ratio_to_activate={ratio!r} (positive integers and a ratio are reproduced)"
        )
    pan = PanAndScan(size, count, float(ratio))
    block = processor.full_image_sequence
    expected = f"{pan.intro}{block}{pan.between}{block} {block}"
    try:
        text = processor.replace_image_token({"num_crops": [2]}, image_idx=0)
    except Exception as error:  # noqa: BLE001 - any failure: the processor call decides
        return f"its replace_image_token fails on crops ({error!r})"
    if text != expected:
        return "its replace_image_token writes crops other than as Gemma3Processor does"
    return pan


def _gemma3_unsupported(processor: Any) -> str | None:
    """Why the fast path does not reproduce Gemma 3's processor call, or None."""
    if _gemma3_sequence(processor) is None:
        return "its full_image_sequence is not the boi, soft tokens, eoi block it builds"
    for name in ("replace_image_token", "_process_images", "_merge_kwargs"):
        if name in vars(processor):
            return f"the processor's {name} is replaced on the instance"
    ip = processor.image_processor
    try:
        kwargs = _gemma3_images_kwargs(processor)
    except Exception as error:  # noqa: BLE001 - its own call would fail the same way
        return f"its _merge_kwargs fails ({error!r})"
    for name, value in kwargs.items():
        if name not in _PAN_AND_SCAN_KEYS and getattr(ip, name, None) != value:
            return f"the processor passes {name}={value!r} to its image processor"
    pan = _gemma3_pan_and_scan(processor)
    return pan if isinstance(pan, str) else None


def _gemma3_sequence(processor: Any) -> tuple[str, str, str, int] | None:
    """Gemma 3's ``(boi, soft token, eoi, count)`` when its ``full_image_sequence`` is
    ``"\n\n" + boi + count soft tokens + eoi + "\n\n"`` (as its processor builds it)."""
    tokenizer = getattr(processor, "tokenizer", None)
    boi, soft, eoi = (
        getattr(tokenizer, n, None) for n in ("boi_token", "image_token", "eoi_token")
    )
    count = getattr(processor, "image_seq_length", None)
    if not (boi and soft and eoi and isinstance(count, int) and count > 0):
        return None
    if getattr(processor, "full_image_sequence", None) != f"\n\n{boi}{soft * count}{eoi}\n\n":
        return None
    if getattr(processor, "image_token", None) != boi:
        return None
    return boi, soft, eoi, count


def _family_fields(processor: Any, facts: FamilyFacts) -> dict[str, Any]:
    """The plan's fields that come from one family's own facts."""
    if facts.rule == "glm":
        # Glm4vProcessor.create_mm_token_type_ids: only <|image|> is typed, 2 inside
        # <|begin_of_video|> ... <|end_of_video|>, 1 elsewhere.
        return {
            "type_ids": ((1, (int(processor.image_token_id),)),),
            "video_span": (int(processor.video_start_id), int(processor.video_end_id)),
        }
    if facts.rule == "fixed":  # Gemma 3
        boi, soft, eoi, count = _gemma3_sequence(processor)  # type: ignore[misc]
        soft_id = int(processor.tokenizer.convert_tokens_to_ids(soft))
        ip = processor.image_processor
        return {
            "fixed_size": (int(ip.size["height"]), int(ip.size["width"])),
            "tokens_per_image": count,
            # Each <start_of_image> becomes its block with one soft token, which the
            # engine then expands to `count` (special tokens split the text, so the ids
            # are those of the full block).
            "placeholder": (boi, f"\n\n{boi}{soft}{eoi}\n\n"),
            "image_token_id": soft_id,
            "type_ids": ((1, tuple(int(i) for i in processor.image_token_ids)),),
            "pan_and_scan": _gemma3_pan_and_scan(processor),  # checked: None or PanAndScan
        }
    return {}


def budgeted(plan: FastPlan, budget: tuple[int, int] | None) -> FastPlan:
    """``plan`` with the resize rule's ``(min_pixels, max_pixels)`` replaced by a
    budget (as the processor call's ``size`` keyword replaces them), or as it is."""
    if budget is None or budget == (plan.min_pixels, plan.max_pixels):
        return plan
    return dataclasses.replace(plan, min_pixels=int(budget[0]), max_pixels=int(budget[1]))


def fast_plan(processor: Any) -> FastPlan | None:
    """The fast path's plan for ``processor`` (or its profile), decided once and kept on
    the profile, or None when its settings are not ones the fast path reproduces (the
    reason logged once)."""
    profile = profile_of(processor)
    return profile.cached("fast_plan", lambda: _plan(profile))
