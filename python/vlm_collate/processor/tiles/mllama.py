"""Llama 3.2 Vision (``MllamaProcessor`` with transformers' torchvision
``MllamaImageProcessor``): each image resized (antialiased bilinear on uint8) to fit the
optimal canvas of up to ``max_image_tiles`` tiles of ``size`` (560² published), padded
with black (byte 0, rescaled and normalised like any pixel) to the canvas and cut into
tiles row by row; ``pixel_values`` is ``(B, images, max_image_tiles, 3, tile, tile)``,
absent images and tiles 0.0. The text keeps one ``<|image|>`` per image (with the BOS the
processor adds when a text has none), and ``cross_attention_mask`` ``(B, L, images,
max_image_tiles)`` marks, for each image, the tokens from its ``<|image|>`` up to the next
image's (consecutive images share the span after the last), over the image's tiles.

Where the processor's own output is inconsistent, the fast path gives the batch it means
(documented in docs/fast_path.md): samples without images after the last sample with
images get ``aspect_ratio_ids`` 0 and ``aspect_ratio_mask`` ``[1, 0, …]`` rows (the
processor's values for an absent image) where the processor drops those rows, and a
batch whose first sample has no image is built where the processor fails
(``IndexError``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..fast_plan import _is_class, _table
from ..profile import ProcessorProfile
from .base import ImageTiles, TilePlan

PROCESSOR = ("MllamaProcessor", "transformers.models.mllama.processing_mllama")
IMAGE_PROCESSOR = ("MllamaImageProcessor", "transformers.models.mllama.image_processing_mllama")
_BILINEAR = 2  # PILImageResampling.BILINEAR
_IMAGE_METHODS = (
    "resize",
    "pad",
    "rescale_and_normalize",
    "_preprocess",
    "preprocess",
    "_prepare_images_structure",
    "__call__",
)
_PROCESSOR_METHODS = (
    "__call__",
    "prepare_inputs_layout",
    "validate_inputs",
    "_process_images",
    "replace_image_token",
)


@dataclass(frozen=True)
class MllamaPlan(TilePlan):
    """The tile plan of a Llama 3.2 Vision processor: ``max_tiles`` (the image
    processor's ``max_image_tiles``), the ``<|image|>`` id and the BOS text."""

    max_tiles: int
    image_token_id: int
    bos_token: str

    def image_tiles(self, height: int, width: int) -> ImageTiles:
        from transformers.models.mllama.image_processing_mllama import (
            get_image_size_fit_to_canvas,
            get_optimal_tiled_canvas,
        )

        tile = self.tile[0]
        canvas_h, canvas_w = get_optimal_tiled_canvas(height, width, self.max_tiles, tile)
        rows, cols = int(canvas_h) // tile, int(canvas_w) // tile
        new_h, new_w = get_image_size_fit_to_canvas(height, width, canvas_h, canvas_w, tile)
        windows = tuple((0, r * tile, c * tile) for r in range(rows) for c in range(cols))
        return ImageTiles(
            resizes=((-1, int(new_h), int(new_w)),),
            windows=windows,
            text=self.placeholder,
            fill=0,
            info=(rows, cols),
        )

    def expanded_text(self, text: str, images: Sequence[ImageTiles]) -> str | None:
        """The processor's text: its BOS inserted (after any leading ``<|image|>``) when
        the text has none; the ``<|image|>`` tokens stay as they are."""
        from transformers.models.mllama.processing_mllama import build_string_from_input

        text = build_string_from_input(text, self.bos_token, self.placeholder)
        if text.count(self.placeholder) != len(images):
            return None
        return text

    def _images(self, images: Sequence[Sequence[ImageTiles]]) -> int:
        return max((len(sample) for sample in images), default=0)

    def slots(self, images: Sequence[Sequence[ImageTiles]]) -> tuple[int, list[int] | None]:
        per_sample = self._images(images)
        if per_sample == 0:
            return 0, None
        slots = []
        for b, sample in enumerate(images):
            for j, image in enumerate(sample):
                first = (b * per_sample + j) * self.max_tiles
                slots.extend(range(first, first + len(image.windows)))
        return len(images) * per_sample * self.max_tiles, slots

    def outputs(
        self,
        pixel_values: torch.Tensor,
        images: Sequence[Sequence[ImageTiles]],
        encoded: dict[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        per_sample = self._images(images)
        if per_sample == 0:  # the processor is called without images: text keys only
            return encoded
        from transformers.models.mllama.image_processing_mllama import (
            get_all_supported_aspect_ratios,
        )

        ids = encoded["input_ids"]
        batch, length = ids.shape
        tiles = self.max_tiles
        cross = np.zeros((batch, length, per_sample, tiles), dtype=np.int64)
        rows, cols = np.nonzero((ids == self.image_token_id).numpy())
        for b, sample in enumerate(images):
            starts = cols[rows == b].tolist()
            ends = [length] * len(starts)
            # Each image attends from its token to the next image's; a run of adjacent
            # image tokens shares the span that follows the run's last one.
            for k in range(len(starts) - 2, -1, -1):
                following = starts[k + 1]
                ends[k] = ends[k + 1] if following == starts[k] + 1 else following
            for j, (start, end, image) in enumerate(zip(starts, ends, sample, strict=False)):
                cross[b, start:end, j, : len(image.windows)] = 1
        supported = get_all_supported_aspect_ratios(tiles)
        aspect_ids = torch.zeros((batch, per_sample), dtype=torch.long)
        aspect_mask = torch.zeros((batch, per_sample, tiles), dtype=torch.long)
        aspect_mask[:, :, 0] = 1
        for b, sample in enumerate(images):
            for j, image in enumerate(sample):
                aspect_ids[b, j] = supported.index(image.info) + 1
                aspect_mask[b, j, : len(image.windows)] = 1
        height, width = pixel_values.shape[-2:]
        return {
            "input_ids": encoded["input_ids"],
            "attention_mask": encoded["attention_mask"],
            "cross_attention_mask": torch.from_numpy(cross),
            "pixel_values": pixel_values.view(batch, per_sample, tiles, 3, height, width),
            "aspect_ratio_ids": aspect_ids,
            "aspect_ratio_mask": aspect_mask,
        }


def _unsupported(processor: Any) -> str | None:
    """Why the fast path does not reproduce ``processor``, or None when it does."""
    if not _is_class(processor, *PROCESSOR):
        name = type(processor).__name__
        return f"{name} is not transformers' MllamaProcessor (subclass or other class)"
    ip = getattr(processor, "image_processor", None)
    if ip is None or not _is_class(ip, *IMAGE_PROCESSOR):
        return f"its image processor {type(ip).__name__} is not transformers' MllamaImageProcessor"
    if not getattr(ip, "do_resize", False) or not getattr(ip, "do_pad", False):
        return "do_resize=False or do_pad=False"
    resample = getattr(ip, "resample", None)
    if not isinstance(resample, int) or int(resample) != _BILINEAR:
        return f"resample={resample!r} (only bilinear is reproduced)"
    size = getattr(ip, "size", None) or {}
    height, width = size.get("height"), size.get("width")
    if not height or height != width:
        return f"size={size!r} is not a square tile"
    tiles = getattr(ip, "max_image_tiles", None)
    if not isinstance(tiles, int) or tiles <= 0:
        return f"max_image_tiles={tiles!r}"
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
    if not isinstance(getattr(processor, "image_token_id", None), int):
        return "its image token has no id"
    if not getattr(processor, "bos_token", None):
        return "its tokenizer has no BOS token"
    return None


def plan(profile: ProcessorProfile) -> MllamaPlan | str:
    """The Llama 3.2 Vision tile plan of ``profile``'s processor, or why there is none."""
    processor = profile.processor
    reason = _unsupported(processor)
    if reason is not None:
        return reason
    ip = processor.image_processor
    table = _table(ip)
    if table is None:
        return "do_rescale=False and do_normalize=False (uint8 pixel values)"
    tile = int(ip.size["height"])
    return MllamaPlan(
        table=table,
        interpolation="bilinear",
        placeholder=str(processor.image_token),
        pad_id=int(processor.tokenizer.pad_token_id),
        tile=(tile, tile),
        max_tiles=int(ip.max_image_tiles),
        image_token_id=int(processor.image_token_id),
        bos_token=str(processor.bos_token),
    )
