"""Idefics3 and SmolVLM (``Idefics3Processor`` / ``SmolVLMProcessor`` with their
torchvision-backend image processors): each image is resized so its longest edge is
``size["longest_edge"]`` (enlarged or shrunk, the other side kept even, at most 4096),
then resized again to whole multiples of ``max_image_size["longest_edge"]`` (M), cut into
``rows x cols`` sub-images of M x M in row-major order, followed by the global image (that
second resize resized to M x M); an image that fits in M is one frame, the resize itself.
Without splitting, the first resize is resized to M x M. Each resize is torch's
antialiased uint8 arithmetic with the processor's resample (Lanczos-3 by default, which
torchvision >= 0.27 runs natively on CPU; bicubic where older torchvision falls back to
it). ``pixel_values`` is ``(batch, frames, 3, M, M)``: each sample's frames one after
another, missing frames 0.0; ``pixel_attention_mask`` ``(batch, frames, M, M)`` int64, 1
on every real frame. Text: per sub-image ``<fake_token_around_image><row_r_col_c>`` and
``image_seq_len`` ``<image>``, ``\\n`` after each row, then ``\\n`` and the global block
``<fake_token_around_image><global-img>`` + ``<image>`` x ``image_seq_len`` +
``<fake_token_around_image>`` (the global block alone when the image is not split)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..fast_plan import _table
from ..profile import ProcessorProfile
from .base import ImageTiles, TilePlan, key_tensor
from .internvl import alone_id
from .pixtral import instance_reason, uint8_resize_reason

__all__ = ["Idefics3TilePlan", "plan"]

_CLASSES = {
    "Idefics3Processor": (
        "transformers.models.idefics3.processing_idefics3",
        "Idefics3ImageProcessor",
        "transformers.models.idefics3.image_processing_idefics3",
    ),
    "SmolVLMProcessor": (
        "transformers.models.smolvlm.processing_smolvlm",
        "SmolVLMImageProcessor",
        "transformers.models.smolvlm.image_processing_smolvlm",
    ),
}
_IMAGE_PROCESSOR_METHODS = (
    "resize",
    "resize_for_vision_encoder",
    "split_images",
    "pad",
    "rescale_and_normalize",
    "_preprocess",
    "preprocess",
    "_prepare_images_structure",
    "__call__",
)
_PROCESSOR_METHODS = ("replace_image_token", "_process_images", "__call__")
_IMAGES_KWARGS = {"return_row_col_info", "return_tensors"}
"""The processor-level image kwargs that change nothing the plan writes."""


def _sizes_module(ip: Any) -> Any:
    import importlib

    return importlib.import_module(type(ip).__module__)


@dataclass(frozen=True)
class Idefics3TilePlan(TilePlan):
    """The resize bound (``longest``: ``size["longest_edge"]``, or ``fixed``: the size's
    height and width), the sub-image side ``M`` (``tile``), whether images are split, the
    block's strings (``fake``, ``global_tag``, ``image_token``), ``image_seq_len``, and
    ``image_id`` when ``<image>`` tokenizes alone (each run then one token in the text,
    repeated by the engine)."""

    longest: int | None
    fixed: tuple[int, int] | None
    split: bool
    fake: str
    global_tag: str
    image_token: str
    seq_len: int
    image_id: int | None = None
    sizes: Any = None  # the image processor's module (transformers' own size rules)

    def repeated(self) -> int | None:
        return self.image_id

    def first_size(self, height: int, width: int) -> tuple[int, int]:
        """The processor's first resize (``resize`` with ``size``)."""
        if self.fixed is not None:
            return self.fixed
        sizes = self.sizes
        height, width = sizes._resize_output_size_rescale_to_max_len(
            height, width, max_len=self.longest
        )
        return sizes._resize_output_size_scale_below_upper_bound(  # type: ignore[no-any-return]
            height, width, max_len=sizes.MAX_IMAGE_SIZE
        )

    def encoder_size(self, height: int, width: int) -> tuple[int, int]:
        """``resize_for_vision_encoder``'s size: sides up to whole multiples of ``M``
        (its arithmetic, the aspect ratio taken before rounding)."""
        m = self.tile[0]
        aspect_ratio = width / height
        if width >= height:
            width = math.ceil(width / m) * m
            height = int(width / aspect_ratio)
            height = math.ceil(height / m) * m
        else:
            height = math.ceil(height / m) * m
            width = int(height * aspect_ratio)
            width = math.ceil(width / m) * m
        return height, width

    def _run(self) -> tuple[str, tuple[int, ...]]:
        if self.image_id is not None:
            return self.image_token, (self.seq_len,)
        return self.image_token * self.seq_len, ()

    def image_tiles(self, height: int, width: int) -> ImageTiles | None:
        m = self.tile[0]
        h1, w1 = self.first_size(height, width)
        if h1 <= 0 or w1 <= 0:
            return None
        resizes = [(-1, h1, w1)]
        run, one = self._run()
        glob = f"{self.fake}{self.global_tag}{run}{self.fake}"
        if not self.split:
            resizes.append((0, m, m))
            return ImageTiles(tuple(resizes), ((1, 0, 0),), glob, fill=None, repeats=one)
        h2, w2 = self.encoder_size(h1, w1)
        if h2 <= 0 or w2 <= 0:
            return None
        if (h2, w2) != (h1, w1):  # else the identity (torch's too): read the first resize
            resizes.append((0, h2, w2))
        encoder = len(resizes) - 1
        if h2 <= m and w2 <= m:
            if (h2, w2) != (m, m):  # not a size the processor's rule makes: let it decide
                return None
            return ImageTiles(tuple(resizes), ((encoder, 0, 0),), glob, fill=None, repeats=one)
        rows, cols = math.ceil(h2 / m), math.ceil(w2 / m)
        if rows * m != h2 or cols * m != w2:
            return None
        windows = [(encoder, r * m, c * m) for r in range(rows) for c in range(cols)]
        resizes.append((encoder, m, m))
        windows.append((encoder + 1, 0, 0))
        parts = []
        for r in range(rows):
            for c in range(cols):
                parts.append(f"{self.fake}<row_{r + 1}_col_{c + 1}>{run}")
            parts.append("\n")
        parts.append("\n" + glob)
        return ImageTiles(
            tuple(resizes),
            tuple(windows),
            "".join(parts),
            fill=None,
            info=(rows, cols),
            repeats=one * (rows * cols + 1),
        )

    def _frames(self, images: Sequence[Sequence[ImageTiles]]) -> int:
        return max((sum(len(t.windows) for t in sample) for sample in images), default=0)

    def slots(self, images: Sequence[Sequence[ImageTiles]]) -> tuple[int, list[int] | None]:
        frames = self._frames(images)
        slots = [
            i * frames + k
            for i, sample in enumerate(images)
            for k in range(sum(len(t.windows) for t in sample))
        ]
        return len(images) * frames, slots

    def outputs(
        self,
        pixel_values: torch.Tensor,
        images: Sequence[Sequence[ImageTiles]],
        encoded: dict[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        out = {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}
        if not any(images):
            return out
        frames = self._frames(images)
        m = self.tile[0]
        out["pixel_values"] = pixel_values.view(len(images), frames, 3, m, m)
        mask = key_tensor((len(images), frames, m, m), torch.int64)
        for i, sample in enumerate(images):
            real = sum(len(t.windows) for t in sample)
            mask[i, :real].fill_(1)
            mask[i, real:].zero_()
        out["pixel_attention_mask"] = mask
        return out


def _interpolation(resample: Any) -> str | None:
    """The kernel for ``resample`` as transformers' torchvision backend runs it: Lanczos
    where torchvision >= 0.27 (else its bicubic fallback), or bicubic/bilinear."""
    try:
        code = int(resample)
    except (TypeError, ValueError):
        return None
    if code == 1:  # PIL's LANCZOS
        from transformers.utils.import_utils import is_torchvision_greater_or_equal

        return "lanczos" if is_torchvision_greater_or_equal("0.27") else "bicubic"
    if uint8_resize_reason(code) is None:
        return {3: "bicubic", 2: "bilinear"}[code]
    return None


def plan(profile: ProcessorProfile) -> Idefics3TilePlan | str:
    """Idefics3's / SmolVLM's plan for ``profile``'s processor, or why its settings are
    not reproduced."""
    processor = profile.processor
    name = type(processor).__name__
    facts = _CLASSES.get(name)
    if facts is None or type(processor).__module__ != facts[0]:
        return f"{name} is not transformers' Idefics3Processor or SmolVLMProcessor (subclass?)"
    ip: Any = getattr(processor, "image_processor", None)
    if type(ip).__name__ != facts[1] or type(ip).__module__ != facts[2]:
        return (
            f"its image processor {type(ip).__name__} is not transformers' {facts[1]} "
            "(torchvision backend)"
        )
    reason = instance_reason(processor, _PROCESSOR_METHODS, "the processor") or instance_reason(
        ip, _IMAGE_PROCESSOR_METHODS, "the image processor"
    )
    if reason:
        return reason
    merged = processor._merge_kwargs(tokenizer_init_kwargs=processor.tokenizer.init_kwargs)
    extra = sorted(set(merged["images_kwargs"]) - _IMAGES_KWARGS)
    if extra:
        return f"its processor-level images_kwargs set {', '.join(extra)}"
    if merged.get("return_mm_token_type_ids"):
        return "return_mm_token_type_ids=True"
    if not ip.do_resize:
        return "do_resize=False"
    if not ip.do_pad:
        return "do_pad=False"
    if getattr(ip, "device", None) not in (None, "cpu"):
        return f"the image processor runs on {ip.device}"
    interpolation = _interpolation(ip.resample)
    if interpolation is None:
        return f"resample={ip.resample!r} (lanczos, bicubic and bilinear are reproduced)"
    size, max_size = ip.size, ip.max_image_size
    longest, fixed = size.get("longest_edge"), None
    if not longest:
        if not (size.get("height") and size.get("width")):
            return f"size={size!r} has neither longest_edge nor height and width"
        fixed = (int(size["height"]), int(size["width"]))
    m = (max_size or {}).get("longest_edge")
    if not isinstance(m, int) or m <= 0:
        return f"max_image_size={max_size!r} has no longest_edge"
    table = _table(ip)
    if table is None:
        return "do_rescale=False and do_normalize=False (uint8 pixel values)"
    seq_len = processor.image_seq_len
    global_tag = getattr(processor, "global_image_tag", None) or getattr(
        processor, "global_image_token", None
    )
    strings = (processor.fake_image_token, global_tag, processor.image_token)
    if not all(isinstance(s, str) and s for s in strings) or not isinstance(seq_len, int):
        return "it lacks the fake, global or image token, or image_seq_len"
    fake, global_tag, image = (str(s) for s in strings)
    tokenizer = profile.tokenizer
    image_id = alone_id(tokenizer, f"{fake}{global_tag}", image, fake)
    if image_id is not None and alone_id(tokenizer, "<row_1_col_2>", image, "\n") is None:
        image_id = None
    if image_id is not None and alone_id(tokenizer, "<row_1_col_1>", image, fake) is None:
        image_id = None
    return Idefics3TilePlan(
        table=table,
        interpolation=interpolation,
        placeholder=image,
        pad_id=profile.require_pad_id(),
        tile=(m, m),
        longest=int(longest) if longest else None,
        fixed=fixed,
        split=bool(ip.do_image_splitting),
        fake=fake,
        global_tag=global_tag,
        image_token=image,
        seq_len=seq_len,
        image_id=image_id,
        sizes=_sizes_module(ip),
    )
