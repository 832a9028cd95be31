"""Pixtral and Mistral 3 (``PixtralProcessor`` with ``PixtralImageProcessor``, the
torchvision backend): each image is shrunk to fit ``longest_edge`` (never enlarged), its
sides rounded up to whole patches (``patch_size x spatial_merge_size``), resized once on
uint8 (antialiased bicubic), rescaled and normalised, and padded with 0.0 at the bottom and
right to the batch's largest height and width; ``image_sizes`` holds each resized size.
Its text is one ``[IMG]`` per patch, each row closed by ``[IMG_BREAK]``, the last one by
``[IMG_END]`` instead.

The whole image is one window of the batch's tile size at (0, 0): what lies past the
resized image is the processor's padding (0.0 after normalising)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..fast_plan import _table
from ..profile import ProcessorProfile
from .base import ImageTiles, TilePlan
from .internvl import alone_id

__all__ = ["PixtralTilePlan", "plan"]

_PROCESSOR = ("PixtralProcessor", "transformers.models.pixtral.processing_pixtral")
_IMAGE_PROCESSOR = (
    "PixtralImageProcessor",
    "transformers.models.pixtral.image_processing_pixtral",
)
_RESAMPLE = {3: "bicubic", 2: "bilinear"}  # PIL's BICUBIC and BILINEAR
_IMAGE_PROCESSOR_METHODS = (
    "resize",
    "rescale_and_normalize",
    "_pad_for_batching",
    "_preprocess",
    "preprocess",
    "__call__",
)
_PROCESSOR_METHODS = ("replace_image_token", "_process_images", "__call__")


def _is(obj: Any, name: str, module: str) -> bool:
    return type(obj).__name__ == name and type(obj).__module__ == module


def uint8_resize_reason(resample: Any) -> str | None:
    """Why torchvision's resize with ``resample`` (a PIL resampling code) is not the shared
    kernel's uint8 arithmetic, or None when it is. torchvision resizes uint8 natively for
    bicubic, and for bilinear only where torch's CPU capability is AVX2/AVX-512 or on ARM
    (elsewhere it resizes floats and rounds)."""
    try:
        mode = _RESAMPLE.get(int(resample))
    except (TypeError, ValueError):
        mode = None
    if mode is None:
        return f"resample={resample!r} (only bicubic and bilinear are reproduced)"
    if mode == "bilinear":
        import platform

        capability = torch.backends.cpu.get_cpu_capability()
        if capability not in ("AVX2", "AVX512") and platform.machine() not in ("aarch64", "arm64"):
            return f"bilinear resize on a CPU without AVX2 ({capability}) runs on floats"
    return None


def instance_reason(obj: Any, methods: Sequence[str], what: str) -> str | None:
    """Why ``obj`` does not behave as its class does: a method replaced on the instance."""
    for name in methods:
        if name in vars(obj):
            return f"{what}'s {name} is replaced on the instance"
    return None


@dataclass(frozen=True)
class PixtralTilePlan(TilePlan):
    """Pixtral's plan: the resize bound (``max_height``, ``max_width``: ``longest_edge``
    twice, or the size's height and width), the ``patch`` the sides are rounded up to
    (``patch_size x spatial_merge_size``), and the three image tokens' strings."""

    max_height: int
    max_width: int
    patch: int
    image_token: str
    break_token: str
    end_token: str
    image_id: int | None = None

    def repeated(self) -> int | None:
        """``[IMG]``'s id where it tokenizes alone: each row is one ``[IMG]`` in the text,
        repeated by the engine (far fewer tokens to tokenize)."""
        return self.image_id

    def resized(self, height: int, width: int) -> tuple[int, int]:
        """The processor's resize target for ``height`` x ``width`` (its arithmetic: floor
        after dividing by the largest ratio, then sides rounded up to whole patches)."""
        ratio = max(height / self.max_height, width / self.max_width)
        if ratio > 1:
            height = int(math.floor(height / ratio))
            width = int(math.floor(width / ratio))
        rows = (height - 1) // self.patch + 1
        columns = (width - 1) // self.patch + 1
        return rows * self.patch, columns * self.patch

    def image_tiles(self, height: int, width: int) -> ImageTiles | None:
        h, w = self.resized(height, width)
        if h <= 0 or w <= 0:  # too thin to keep a pixel: the processor's error names it
            return None
        rows, columns = h // self.patch, w // self.patch
        run = self.image_token * columns
        repeats: tuple[int, ...] = ()
        if self.image_id is not None:
            run, repeats = self.image_token, (columns,) * rows
        text = (run + self.break_token) * (rows - 1) + run + self.end_token
        return ImageTiles(
            resizes=((-1, h, w),),
            windows=((0, 0, 0),),
            text=text,
            fill=None,
            info=(h, w),
            repeats=repeats,
        )

    def tile_size(self, images: Sequence[Sequence[ImageTiles]]) -> tuple[int, int]:
        sizes = [t.info for sample in images for t in sample]
        if not sizes:
            return self.tile
        return max(h for h, _ in sizes), max(w for _, w in sizes)

    def outputs(
        self,
        pixel_values: torch.Tensor,
        images: Sequence[Sequence[ImageTiles]],
        encoded: dict[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        out = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
        sizes = [t.info for sample in images for t in sample]
        if sizes:
            out["pixel_values"] = pixel_values
            out["image_sizes"] = torch.tensor(sizes, dtype=torch.int64)
        return out


def plan(profile: ProcessorProfile) -> PixtralTilePlan | str:
    """Pixtral's plan for ``profile``'s processor, or why its settings are not reproduced."""
    processor = profile.processor
    if not _is(processor, *_PROCESSOR):
        return f"{type(processor).__name__} is not transformers' PixtralProcessor (subclass?)"
    ip: Any = getattr(processor, "image_processor", None)
    if not _is(ip, *_IMAGE_PROCESSOR):
        return (
            f"its image processor {type(ip).__name__} is not transformers' "
            "PixtralImageProcessor (torchvision backend)"
        )
    reason = instance_reason(processor, _PROCESSOR_METHODS, "the processor") or instance_reason(
        ip, _IMAGE_PROCESSOR_METHODS, "the image processor"
    )
    if reason:
        return reason
    if not ip.do_resize:
        return "do_resize=False"
    if getattr(ip, "do_center_crop", None):
        return "do_center_crop=True"
    if not ip.do_pad:
        return "do_pad=False (pixel_values a list)"
    if getattr(ip, "device", None) not in (None, "cpu"):
        return f"the image processor runs on {ip.device}"
    if str(getattr(ip, "data_format", None) or "channels_first") not in (
        "channels_first",
        "ChannelDimension.FIRST",
    ):
        return f"data_format={ip.data_format!r}"
    reason = uint8_resize_reason(ip.resample)
    if reason:
        return reason
    size = ip.size
    if size.get("longest_edge"):
        bound = (int(size["longest_edge"]),) * 2
    elif size.get("height") and size.get("width"):
        bound = (int(size["height"]), int(size["width"]))
    else:
        return f"size={size!r} has neither longest_edge nor height and width"
    patch = int(processor.patch_size) * int(processor.spatial_merge_size)
    if patch <= 0:
        return f"patch_size x spatial_merge_size = {patch}"
    table = _table(ip)
    if table is None:
        return "do_rescale=False and do_normalize=False (uint8 pixel values)"
    tokens = (processor.image_token, processor.image_break_token, processor.image_end_token)
    if not all(isinstance(t, str) and t for t in tokens):
        return f"image tokens {tokens!r} are not all strings"
    ends = (tokens[1], tokens[2])
    image_id = alone_id(profile.tokenizer, "", tokens[0], ends[0])
    if image_id is not None and alone_id(profile.tokenizer, ends[0], tokens[0], ends[1]) is None:
        image_id = None
    return PixtralTilePlan(
        table=table,
        interpolation=_RESAMPLE[int(ip.resample)],
        placeholder=processor.image_token,
        pad_id=profile.require_pad_id(),
        tile=(patch, patch),
        max_height=bound[0],
        max_width=bound[1],
        patch=patch,
        image_token=tokens[0],
        break_token=tokens[1],
        end_token=tokens[2],
        image_id=image_id,
    )
