"""LLaVA-OneVision's tiled fast path: ``LlavaOnevisionProcessor`` with transformers'
``LlavaOnevisionImageProcessor`` (the torchvision backend).

What the processor does (transformers 5.x), reproduced here. An image that is its
sample's only image is tiled "any-resolution": ``select_best_resolution`` picks a grid
pinpoint for its size, the image is resized on uint8 with antialiasing to fit it keeping
its aspect ratio (``get_patch_output_size``), padded with black to the pinpoint, centred
(``_get_padding_size``), and cut into ``size`` patches row by row, after the base image
(the original resized to ``size``). An image in a sample of several is padded to a square
with the mean colour (``int(mean * 255)``, centred, ``pad_to_square``) and resized to
``size``: one patch. Every patch is then "resized" to ``size`` (the same size: the
identity), rescaled and normalised, and each image's patches padded with 0.0 to the
batch's most patches. Each image's ``<image>`` becomes the processor's count of
``<image>`` (``_get_number_of_features`` for a tiled image, ``num_image_tokens + 1``
for one of several; one fewer with ``vision_feature_select_strategy="default"``).
Keys: ``input_ids``, ``attention_mask``, and with images ``pixel_values``
``(images, most patches, 3, H, W)`` float32, ``image_sizes`` ``(images, 2)`` (height,
width before any resize) and ``batch_num_images`` (images per sample that has any).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..fast_plan import _table
from ..profile import ProcessorProfile
from .base import ImageTiles, TilePlan
from .internvl import alone_id, interpolation_of, is_class, replaced

PROCESSOR = (
    "LlavaOnevisionProcessor",
    "transformers.models.llava_onevision.processing_llava_onevision",
)
IMAGE_PROCESSOR = (
    "LlavaOnevisionImageProcessor",
    "transformers.models.llava_onevision.image_processing_llava_onevision",
)
REPLACED_IP = (
    "resize",
    "rescale_and_normalize",
    "pad_to_square",
    "_get_image_patches",
    "_resize_for_patching",
    "_pad_for_patching",
    "_get_padding_size",
    "_pad_for_batching",
    "_preprocess",
    "preprocess",
)
REPLACED_PROCESSOR = (
    "replace_image_token",
    "_get_number_of_features",
    "_get_unpadded_features",
    "__call__",
)


@dataclass(frozen=True)
class LlavaOnevisionPlan(TilePlan):
    """``pinpoints``: the image processor's ``image_grid_pinpoints`` as (height, width);
    ``background``: the multi-image pad colour; ``features``: the processor's own
    ``_get_number_of_features``; ``less``: 1 with the ``"default"`` feature strategy;
    ``per_image``: ``num_image_tokens``; ``image_id``: the id of ``<image>`` when the
    engine may repeat it (an added token), else None."""

    pinpoints: tuple[tuple[int, int], ...] = ()
    background: tuple[int, int, int] = (0, 0, 0)
    features: Any = None
    less: int = 0
    per_image: int = 729
    image_id: int | None = None

    def repeated(self) -> int | None:
        return self.image_id

    def _tiles(self, resizes: list, windows: list, count: int, **rest: Any) -> ImageTiles:
        repeats: tuple[int, ...]
        if self.image_id is not None:
            text, repeats = self.placeholder, (count,)
        else:
            text, repeats = self.placeholder * count, ()
        return ImageTiles(tuple(resizes), tuple(windows), text, repeats=repeats, **rest)

    def image_tiles(self, height: int, width: int) -> ImageTiles | None:
        """An image alone in its sample: the base image, then the pinpoint's patches."""
        from transformers.image_processing_utils import (
            get_patch_output_size,
            select_best_resolution,
        )
        from transformers.image_utils import ChannelDimension

        th, tw = self.tile
        try:
            best = select_best_resolution((height, width), list(self.pinpoints))
            shape = np.broadcast_to(np.zeros((), np.uint8), (3, height, width))
            fit = get_patch_output_size(shape, best, ChannelDimension.FIRST)
            count = int(self.features(height, width, th, tw)) - self.less
        except (ValueError, TypeError, ZeroDivisionError, ArithmeticError):
            return None  # the processor raises it, naming the sample
        left, top = (best[1] - fit[1]) // 2, (best[0] - fit[0]) // 2  # _get_padding_size
        windows = [(0, 0, 0)] + [
            (1, y - top, x - left) for y in range(0, best[0], th) for x in range(0, best[1], tw)
        ]
        return self._tiles(
            [(-1, th, tw), (-1, int(fit[0]), int(fit[1]))], windows, count, info=(height, width)
        )

    def sample_tiles(self, sizes: Sequence[tuple[int, int]]) -> list[ImageTiles | None]:
        if len(sizes) == 1:
            return [self.image_tiles(*sizes[0])]
        th, tw = self.tile
        out: list[ImageTiles | None] = []
        for height, width in sizes:
            side = max(height, width)  # pad_to_square
            left, top = (side - width) // 2, (side - height) // 2
            pad = ((top, side - height - top, left, side - width - left), self.background)
            out.append(
                self._tiles(
                    [(-1, th, tw)],
                    [(0, 0, 0)],
                    self.per_image + 1 - self.less,
                    info=(height, width),
                    source_pad=pad if side != height or side != width else None,
                )
            )
        return out

    def _most(self, images: Sequence[Sequence[ImageTiles]]) -> int:
        return max((len(t.windows) for sample in images for t in sample), default=0)

    def slots(self, images: Sequence[Sequence[ImageTiles]]) -> tuple[int, list[int] | None]:
        most = self._most(images)
        flat = [t for sample in images for t in sample]
        slots = [i * most + k for i, t in enumerate(flat) for k in range(len(t.windows))]
        return len(flat) * most, slots

    def outputs(
        self,
        pixel_values: torch.Tensor,
        images: Sequence[Sequence[ImageTiles]],
        encoded: dict[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        out = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
        flat = [t for sample in images for t in sample]
        if not flat:
            return out
        th, tw = self.tile
        out["pixel_values"] = pixel_values.view(len(flat), self._most(images), 3, th, tw)
        out["image_sizes"] = torch.tensor([t.info for t in flat], dtype=torch.int64)
        out["batch_num_images"] = torch.tensor([len(s) for s in images if s], dtype=torch.int64)
        return out


def unsupported(processor: Any) -> str | None:
    """Why the plan does not reproduce ``processor``, or None when it does."""
    if not is_class(processor, *PROCESSOR):
        name = type(processor).__name__
        return f"{name} is not transformers' LlavaOnevisionProcessor (subclass?)"
    ip: Any = getattr(processor, "image_processor", None)
    if not is_class(ip, *IMAGE_PROCESSOR):
        name = type(ip).__name__
        return f"its image processor {name} is not transformers' LlavaOnevisionImageProcessor"
    method = replaced(ip, REPLACED_IP) or replaced(processor, REPLACED_PROCESSOR)
    if method is not None:
        return f"{method} is replaced on the instance"
    if not getattr(ip, "do_resize", False):
        return "do_resize=False"
    if not getattr(ip, "do_pad", False):
        return "do_pad=False (patches not padded to a batch)"
    if getattr(ip, "do_center_crop", None):
        return "do_center_crop=True"
    if interpolation_of(ip) is None:
        return f"resample={ip.resample!r} (bicubic and bilinear are reproduced)"
    size = getattr(ip, "size", None)
    if not size or not size.get("height") or size.get("height") != size.get("width"):
        return f"size={size!r} is not a square height/width"
    side = int(size["height"])
    crop = getattr(ip, "crop_size", None)
    if crop and crop.get("height") and crop.get("height") != side:
        return f"crop_size={crop!r} differs from size"
    pinpoints = getattr(ip, "image_grid_pinpoints", None)
    if (
        not isinstance(pinpoints, list)
        or not pinpoints
        or any(len(p) != 2 or p[0] % side or p[1] % side or min(p) <= 0 for p in pinpoints)
    ):
        return f"image_grid_pinpoints are not positive multiples of {side}"
    if getattr(ip, "device", None) not in (None, "cpu"):
        return f"the image processor runs on {ip.device}"
    mean = getattr(ip, "image_mean", None)
    if not isinstance(mean, (list, tuple)) or len(mean) != 3:
        return f"image_mean={mean!r} is not one value per channel (the pad colour)"
    count = getattr(processor, "num_image_tokens", None)
    if not isinstance(count, int) or count <= 0:
        return f"num_image_tokens={count!r}"
    if not isinstance(getattr(processor, "image_token", None), str):
        return "it has no image token"
    merged = processor._merge_kwargs(tokenizer_init_kwargs=processor.tokenizer.init_kwargs)
    if merged["images_kwargs"]:
        return f"its processor-level images_kwargs set {', '.join(sorted(merged['images_kwargs']))}"
    return None


def plan(profile: ProcessorProfile) -> LlavaOnevisionPlan | str:
    processor = profile.processor
    reason = unsupported(processor)
    if reason is not None:
        return reason
    ip = processor.image_processor
    table = _table(ip)
    if table is None:
        return "do_rescale=False and do_normalize=False (uint8 pixel values)"
    side = int(ip.size["height"])
    token = processor.image_token
    return LlavaOnevisionPlan(
        table=table,
        interpolation=interpolation_of(ip),  # type: ignore[arg-type]
        placeholder=token,
        pad_id=profile.require_pad_id(),
        tile=(side, side),
        pinpoints=tuple((int(h), int(w)) for h, w in ip.image_grid_pinpoints),
        background=tuple(int(x * 255) for x in ip.image_mean),  # type: ignore[arg-type]
        features=processor._get_number_of_features,
        less=int(processor.vision_feature_select_strategy == "default"),
        per_image=int(processor.num_image_tokens),
        image_id=alone_id(processor.tokenizer, "", token, ""),
    )
