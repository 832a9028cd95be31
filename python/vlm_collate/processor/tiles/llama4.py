"""Llama 4 (``Llama4Processor`` with transformers' torchvision ``Llama4ImageProcessor``):
each image is resized (antialiased bilinear on uint8) without distortion into the best
canvas of up to ``max_patches`` tiles of ``size`` (336² published; upscaled only when
smaller than a tile, unless ``resize_to_max_canvas``), padded with black (byte 0) to the
canvas and cut into tiles row by row; when it has more than one tile, the image resized
to one tile follows as a global view. ``pixel_values`` is ``(tiles, 3, 336, 336)`` over
the batch, in the dtype the processor's own rescale and normalise returns: bfloat16 (it
rescales and normalises in bfloat16, as the original implementation does); the 3 x 256
table holds exactly its bfloat16 values, so the pixels are bit-identical.

Text: each ``<|image|>`` becomes ``<|image_start|>``, for a grid of more than one tile
each row's tiles of ``(tile/14)² / 4`` ``<|patch|>`` (144) separated by
``<|tile_x_separator|>`` and ended by ``<|tile_y_separator|>``, then ``<|image|>``, the
global view's ``<|patch|>`` run and ``<|image_end|>``. Each ``<|patch|>`` run is
tokenized as one token and repeated by the engine (when ``<|patch|>`` tokenizes alone,
checked once; else the runs are written in full).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..fast_plan import _is_class
from ..profile import ProcessorProfile
from .base import ImageTiles, TilePlan
from .internvl import alone_id

PROCESSOR = ("Llama4Processor", "transformers.models.llama4.processing_llama4")
IMAGE_PROCESSOR = ("Llama4ImageProcessor", "transformers.models.llama4.image_processing_llama4")
_BILINEAR = 2  # PILImageResampling.BILINEAR
_CONTROL_START = "\U000f0000"  # transformers' marked control tokens: never replaced there
_IMAGE_METHODS = (
    "resize",
    "rescale_and_normalize",
    "normalize",
    "rescale",
    "_preprocess",
    "preprocess",
    "__call__",
)
_PROCESSOR_METHODS = (
    "__call__",
    "prepare_inputs_layout",
    "validate_inputs",
    "_process_images",
    "replace_image_token",
    "_prompt_split_image",
    "get_text_with_replacements",
)
_STRINGS = (
    "start_of_img_token",
    "end_of_img_token",
    "img_patch_token",
    "tile_token",
    "tile_global_token",
    "image_token",
)


@functools.lru_cache(maxsize=4096)
def _geometry(
    height: int, width: int, tile: int, max_patches: int, to_max_canvas: bool
) -> tuple[tuple[int, int], tuple[int, int]]:
    """``((rows, cols), (new_height, new_width))`` as the image processor computes them:
    its own canvas choice (``get_best_fit`` on torch values) and size without
    distortion."""
    from transformers.image_utils import SizeDict
    from transformers.models.llama4.image_processing_llama4 import (
        find_supported_resolutions,
        get_best_fit,
        get_max_res_without_distortion,
    )

    size = SizeDict(height=tile, width=tile)
    possible = torch.tensor(find_supported_resolutions(max_num_chunks=max_patches, patch_size=size))
    target = get_best_fit((height, width), possible, resize_to_max_canvas=to_max_canvas)
    if to_max_canvas:
        bound = (target[0], target[1])
    else:
        bound = (min(max(height, tile), target[0]), min(max(width, tile), target[1]))
    new = get_max_res_without_distortion((height, width), bound)
    rows, cols = int(target[0]) // tile, int(target[1]) // tile
    return (rows, cols), (max(int(new[0]), 1), max(int(new[1]), 1))


@dataclass(frozen=True)
class Llama4Plan(TilePlan):
    """The tile plan of a Llama 4 processor: the tiling settings, the ``<|patch|>`` count
    per tile, the block's strings (start, end, patch, x and y separators, image), the
    ``<|patch|>`` id the engine repeats (None: runs written in full) and the dtype the
    processor's rescale and normalise returns."""

    max_patches: int
    to_max_canvas: bool
    per_tile: int
    strings: tuple[str, str, str, str, str, str]
    patch_id: int | None
    dtype: torch.dtype

    def repeated(self) -> int | None:
        return self.patch_id

    def output_dtype(self) -> torch.dtype:
        return self.dtype

    def image_tiles(self, height: int, width: int) -> ImageTiles:
        tile = self.tile[0]
        (rows, cols), (new_h, new_w) = _geometry(
            height, width, tile, self.max_patches, self.to_max_canvas
        )
        start, end, patch, x_sep, y_sep, image = self.strings
        windows = [(0, r * tile, c * tile) for r in range(rows) for c in range(cols)]
        resizes = [(-1, new_h, new_w)]
        run = patch if self.patch_id is not None else patch * self.per_tile
        parts = [start]
        if rows * cols > 1:
            resizes.append((-1, tile, tile))  # the global view: the image at one tile
            windows.append((1, 0, 0))
            for _ in range(rows):
                parts += [x_sep.join([run] * cols), y_sep]
        parts += [image, run, end]
        repeats = (self.per_tile,) * len(windows) if self.patch_id is not None else ()
        return ImageTiles(
            resizes=tuple(resizes),
            windows=tuple(windows),
            text="".join(parts),
            fill=0,
            info=(rows, cols),
            repeats=repeats,
        )

    def expanded_text(self, text: str, images: Sequence[ImageTiles]) -> str | None:
        # A marked control token (left in place by the processor) or a <|patch|> of the
        # text itself (it would join the engine's runs): the processor call.
        if _CONTROL_START in text or self.strings[2] in text:
            return None
        return super().expanded_text(text, images)

    def outputs(
        self,
        pixel_values: torch.Tensor,
        images: Sequence[Sequence[ImageTiles]],
        encoded: dict[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        if not any(images):  # the processor is called without images: text keys only
            return encoded
        return {
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"],
            "pixel_values": pixel_values,
        }


def _table(ip: Any) -> torch.Tensor | None:
    """The image processor's own rescale and normalise of every byte of every channel
    (``3 x 256``, float32 holding its values exactly), and the dtype it returns; None
    when that is not a floating dtype. ``fast_plan._table`` accepts float32 only: this
    processor computes in bfloat16."""
    values = torch.arange(256, dtype=torch.uint8).view(1, 1, 1, 256).expand(1, 3, 1, 256)
    mean, std = ip.image_mean, ip.image_std
    out = ip.rescale_and_normalize(
        values.contiguous(),
        ip.do_rescale,
        ip.rescale_factor,
        ip.do_normalize,
        tuple(mean) if isinstance(mean, list) else mean,
        tuple(std) if isinstance(std, list) else std,
    )
    if out.dtype not in (torch.float32, torch.bfloat16, torch.float16):
        return None
    return out


def _unsupported(processor: Any) -> str | None:
    """Why the fast path does not reproduce ``processor``, or None when it does."""
    if not _is_class(processor, *PROCESSOR):
        name = type(processor).__name__
        return f"{name} is not transformers' Llama4Processor (subclass or other class)"
    ip = getattr(processor, "image_processor", None)
    if ip is None or not _is_class(ip, *IMAGE_PROCESSOR):
        return f"its image processor {type(ip).__name__} is not transformers' Llama4ImageProcessor"
    if not getattr(ip, "do_resize", False):
        return "do_resize=False"
    resample = getattr(ip, "resample", None)
    if not isinstance(resample, int) or int(resample) != _BILINEAR:
        return f"resample={resample!r} (only bilinear is reproduced)"
    size = getattr(ip, "size", None) or {}
    height, width = size.get("height"), size.get("width")
    if not height or height != width:
        return f"size={size!r} is not a square tile"
    patches = getattr(ip, "max_patches", None)
    if not isinstance(patches, int) or patches <= 0:
        return f"max_patches={patches!r}"
    if getattr(ip, "device", None) not in (None, "cpu"):
        return f"the image processor runs on {ip.device}"
    for name in _IMAGE_METHODS:
        if name in vars(ip):
            return f"the image processor's {name} is replaced on the instance"
    for name in _PROCESSOR_METHODS:
        if name in vars(processor):
            return f"the processor's {name} is replaced on the instance"
    tokenizer = getattr(processor, "tokenizer", None)
    if tokenizer is None or getattr(tokenizer, "pad_token_id", None) is None:
        return "its tokenizer has no pad token"
    merged = processor._merge_kwargs(tokenizer_init_kwargs=tokenizer.init_kwargs)
    for name, value in merged["images_kwargs"].items():
        if getattr(ip, name, None) != value:
            return f"the processor passes {name}={value!r} to its image processor"
    if processor.fake_image_token != processor.image_token:
        return "its fake_image_token differs from its image_token"
    if any(not isinstance(getattr(processor, name, None), str) for name in _STRINGS):
        return "its image block tokens are not strings"
    return None


def plan(profile: ProcessorProfile) -> Llama4Plan | str:
    """The Llama 4 tile plan of ``profile``'s processor, or why there is none."""
    processor = profile.processor
    reason = _unsupported(processor)
    if reason is not None:
        return reason
    ip = processor.image_processor
    table = _table(ip)
    if table is None:
        return "do_rescale=False and do_normalize=False (uint8 pixel values)"
    tile = int(ip.size["height"])
    per_tile = int((tile // processor.patch_size) ** 2 // processor.downsample_ratio)
    strings = tuple(str(getattr(processor, name)) for name in _STRINGS)
    start, end, patch = strings[:3]
    return Llama4Plan(
        table=table.to(torch.float32).reshape(3 * 256).contiguous(),
        interpolation="bilinear",
        placeholder=str(processor.image_token),
        pad_id=int(processor.tokenizer.pad_token_id),
        tile=(tile, tile),
        max_patches=int(ip.max_patches),
        to_max_canvas=bool(ip.resize_to_max_canvas),
        per_tile=per_tile,
        strings=strings,  # type: ignore[arg-type]
        patch_id=alone_id(processor.tokenizer, start, patch, end),
        dtype=table.dtype,
    )
