"""InternVL's tiled fast path: ``InternVLProcessor`` with transformers'
``GotOcr2ImageProcessor`` (the torchvision backend).

What the processor does (transformers 5.x), reproduced here: with ``crop_to_patches``
(the processor's own default, which wins over the image processor's attribute) each
image is resized on uint8 with antialiasing to the grid of ``size`` tiles that
``get_optimal_tiled_canvas`` picks for its aspect ratio (``min_patches`` to
``max_patches`` tiles), cut into those tiles row by row, and, when the grid has more than
one tile, followed by a thumbnail (the original image resized to ``size``); every tile is
then "resized" to ``size`` (the same size: the identity), rescaled and normalised.
Without ``crop_to_patches`` each image is one tile, resized to ``size``. Each image's
``<IMG_CONTEXT>`` in the text becomes ``<img>`` + ``image_seq_length`` x tiles
``<IMG_CONTEXT>`` + ``</img>``. Keys: ``input_ids``, ``attention_mask``, and
``pixel_values`` ``(tiles, 3, H, W)`` float32 when the batch has images.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..fast_plan import _table
from ..profile import ProcessorProfile
from .base import ImageTiles, TilePlan

PROCESSOR = ("InternVLProcessor", "transformers.models.internvl.processing_internvl")
IMAGE_PROCESSOR = (
    "GotOcr2ImageProcessor",
    "transformers.models.got_ocr2.image_processing_got_ocr2",
)
INTERPOLATIONS = {3: "bicubic", 2: "bilinear"}  # PILImageResampling values the engine has
# Image kwargs the processor may set at its level (InternVLProcessor.images_kwargs) that the
# plan reads; any other one set there is a setting the plan does not follow.
TILING_KWARGS = ("crop_to_patches", "min_patches", "max_patches")
REPLACED = ("resize", "crop_image_to_patches", "rescale_and_normalize", "_preprocess")


def is_class(obj: Any, name: str, module: str) -> bool:
    """Whether ``obj`` is an instance of exactly that class (not a subclass)."""
    cls = type(obj)
    return cls.__name__ == name and cls.__module__ == module


def replaced(obj: Any, names: Sequence[str]) -> str | None:
    """The first of ``names`` replaced on the instance ``obj`` (set in its ``__dict__``)."""
    return next((name for name in names if name in vars(obj)), None)


def interpolation_of(ip: Any) -> str | None:
    """The engine's name for the image processor's ``resample``, or None."""
    try:
        return INTERPOLATIONS.get(int(ip.resample))
    except (TypeError, ValueError, AttributeError):
        return None


@dataclass(frozen=True)
class InternVLPlan(TilePlan):
    """``crop``: ``crop_to_patches``; ``patches``: ``(min_patches, max_patches)``;
    ``block``: ``(<img>, <IMG_CONTEXT>, </img>, image_seq_length)``; ``context_id``: the
    id of ``<IMG_CONTEXT>`` when it tokenizes alone (the engine then repeats it), or None
    (the block's text written in full)."""

    crop: bool = True
    patches: tuple[int, int] = (1, 12)
    block: tuple[str, str, str, int] = ("<img>", "<IMG_CONTEXT>", "</img>", 256)
    context_id: int | None = None

    def repeated(self) -> int | None:
        return self.context_id

    def grid(self, height: int, width: int) -> tuple[int, int]:
        """``(columns, rows)`` of the image's tile grid: transformers' own choice."""
        from transformers.models.got_ocr2.image_processing_got_ocr2 import (
            get_optimal_tiled_canvas,
        )

        return get_optimal_tiled_canvas((height, width), self.tile, *self.patches)  # type: ignore[no-any-return]

    def image_tiles(self, height: int, width: int) -> ImageTiles:
        th, tw = self.tile
        if not self.crop:
            resizes, windows = [(-1, th, tw)], [(0, 0, 0)]
        else:
            columns, rows = self.grid(height, width)
            resizes = [(-1, th * rows, tw * columns)]
            windows = [(0, r * th, c * tw) for r in range(rows) for c in range(columns)]
            if rows * columns != 1:  # the thumbnail: the original image resized to a tile
                resizes.append((-1, th, tw))
                windows.append((1, 0, 0))
        start, context, end, count = self.block
        run = count * len(windows)
        if self.context_id is not None:
            return ImageTiles(tuple(resizes), tuple(windows), start + context + end, repeats=(run,))
        return ImageTiles(tuple(resizes), tuple(windows), f"{start}{context * run}{end}")

    def outputs(
        self,
        pixel_values: torch.Tensor,
        images: Sequence[Sequence[ImageTiles]],
        encoded: dict[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        out = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
        if any(images):
            out["pixel_values"] = pixel_values
        return out


def unsupported(processor: Any) -> str | None:
    """Why the plan does not reproduce ``processor``, or None when it does."""
    if not is_class(processor, *PROCESSOR):
        return f"{type(processor).__name__} is not transformers' InternVLProcessor (subclass?)"
    ip: Any = getattr(processor, "image_processor", None)
    if not is_class(ip, *IMAGE_PROCESSOR):
        return f"its image processor {type(ip).__name__} is not transformers' GotOcr2ImageProcessor"
    method = replaced(ip, REPLACED) or replaced(processor, ("replace_image_token", "__call__"))
    if method is not None:
        return f"{method} is replaced on the instance"
    if not getattr(ip, "do_resize", False):
        return "do_resize=False"
    if interpolation_of(ip) is None:
        return f"resample={ip.resample!r} (bicubic and bilinear are reproduced)"
    size = getattr(ip, "size", None)
    if not size or not size.get("height") or not size.get("width"):
        return f"size={size!r} has no height/width"
    if getattr(ip, "device", None) not in (None, "cpu"):
        return f"the image processor runs on {ip.device}"
    count = getattr(processor, "image_seq_length", None)
    if not isinstance(count, int) or count <= 0:
        return f"image_seq_length={count!r}"
    names = ("start_image_token", "image_token", "end_image_token")
    if not all(isinstance(getattr(processor, n, None), str) for n in names):
        return "it has no <img>, <IMG_CONTEXT>, </img> tokens"
    extra = sorted(set(images_kwargs(processor)) - set(TILING_KWARGS))
    if extra:
        return f"its processor-level images_kwargs set {', '.join(extra)}"
    return None


def images_kwargs(processor: Any) -> dict[str, Any]:
    """The image kwargs the processor call passes its image processor when the caller
    passes none (its class defaults, e.g. InternVL's ``crop_to_patches=True``)."""
    tokenizer = processor.tokenizer
    merged = processor._merge_kwargs(tokenizer_init_kwargs=tokenizer.init_kwargs)
    return dict(merged["images_kwargs"])


def alone_id(tokenizer: Any, start: str, token: str, end: str) -> int | None:
    """The id of ``token`` when a run of it between ``start`` and ``end`` tokenizes as one
    id per copy whatever stands around it (an added token, checked on a run of three),
    else None."""
    if token not in (getattr(tokenizer, "added_tokens_encoder", None) or {}):
        return None
    one = tokenizer(f"a{start}{token}{end}b", add_special_tokens=False)["input_ids"]
    three = tokenizer(f"a{start}{token * 3}{end}b", add_special_tokens=False)["input_ids"]
    ids = tokenizer.convert_tokens_to_ids([token])
    if len(ids) != 1 or ids[0] is None or ids[0] == tokenizer.unk_token_id:
        return None
    token_id = int(ids[0])
    if one.count(token_id) != 1:
        return None
    k = one.index(token_id)
    return token_id if three == one[:k] + [token_id] * 3 + one[k + 1 :] else None


def plan(profile: ProcessorProfile) -> InternVLPlan | str:
    processor = profile.processor
    reason = unsupported(processor)
    if reason is not None:
        return reason
    ip = processor.image_processor
    table = _table(ip)
    if table is None:
        return "do_rescale=False and do_normalize=False (uint8 pixel values)"
    kwargs = images_kwargs(processor)
    setting = {name: kwargs.get(name, getattr(ip, name, None)) for name in TILING_KWARGS}
    crop = bool(setting["crop_to_patches"])
    low, high = setting["min_patches"], setting["max_patches"]
    if crop and not (isinstance(low, int) and isinstance(high, int) and 1 <= low <= high):
        return f"min_patches={low!r}, max_patches={high!r}"
    return InternVLPlan(
        table=table,
        interpolation=interpolation_of(ip),  # type: ignore[arg-type]
        placeholder=processor.image_token,
        pad_id=profile.require_pad_id(),
        tile=(int(ip.size["height"]), int(ip.size["width"])),
        crop=crop,
        patches=(int(low or 1), int(high or 1)),
        block=(
            processor.start_image_token,
            processor.image_token,
            processor.end_image_token,
            int(processor.image_seq_length),
        ),
        context_id=alone_id(
            processor.tokenizer,
            processor.start_image_token,
            processor.image_token,
            processor.end_image_token,
        ),
    )
