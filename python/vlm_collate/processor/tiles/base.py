"""What a tiled family declares: :class:`TilePlan` (read once from the processor) and
:class:`ImageTiles` (one image's resizes, windows and text)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

Allocate = Callable[[tuple[int, ...], torch.dtype], torch.Tensor]

_ALLOCATE: list[Allocate] = [lambda shape, dtype: torch.empty(shape, dtype=dtype)]


def key_tensor(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor for a large output key other than ``pixel_values`` (a
    family's pixel mask): drawn from the encode step's allocator once it is installed
    (:func:`install_allocator`: shared memory in a DataLoader worker, storage reused
    across calls elsewhere), else ``torch.empty``. The plan writes every value."""
    return _ALLOCATE[0](shape, dtype)


def install_allocator(allocate: Allocate) -> None:
    """Makes ``allocate`` what :func:`key_tensor` draws from (the tiled encode step
    installs its own; the processor layer cannot import it)."""
    _ALLOCATE[0] = allocate


@dataclass(frozen=True)
class ImageTiles:
    """One image's part of a batch, in the processor's order.

    ``resizes``: ``(source, height, width)``; ``source`` -1 resizes the image itself, ``k``
    the image's ``k``-th resize (a resize of a resize, as some processors chain them).
    ``windows``: ``(resize, top, left)``, one per tile: the tile is the window of that
    resize at (top, left), the output's tile size; where it reaches past the resized image
    (the processor pads) the values are ``fill``: a byte (black is 0) mapped through the
    processor's rescale and normalise like any pixel, or None for 0.0 written after
    normalising. ``text``: what replaces the image's placeholder in the rendered text.
    ``info``: the family's own facts for its output keys (grid, aspect ratio, size).
    ``repeats``: where the plan has a :meth:`TilePlan.repeated` token, how many copies of
    it each of its occurrences in ``text`` stands for, in order (the engine repeats it
    after tokenizing). ``source_pad``: ``((top, bottom, left, right), (r, g, b))`` where
    the processor pads the image with that colour before resizing it (its resizes then
    read the padded image), else None."""

    resizes: tuple[tuple[int, int, int], ...]
    windows: tuple[tuple[int, int, int], ...]
    text: str
    fill: int | None = 0
    info: Any = None
    repeats: tuple[int, ...] = ()
    source_pad: tuple[tuple[int, int, int, int], tuple[int, int, int]] | None = None


@dataclass(frozen=True)
class TilePlan(ABC):
    """A tiled family's fast path, read once from its processor: the byte ``table`` of the
    processor's own rescale and normalise (``3 x 256`` float32), the resize
    ``interpolation`` (``"bicubic"`` or ``"bilinear"``, torch's antialiased uint8
    arithmetic), the ``placeholder`` each image has in the rendered text, the tokenizer's
    ``pad_id`` and the ``tile`` size (height, width). A family overrides
    :meth:`image_tiles` and :meth:`outputs`, and where its output is padded or its tiles
    vary in size, :meth:`tile_size` and :meth:`slots`."""

    table: torch.Tensor
    interpolation: str
    placeholder: str
    pad_id: int
    tile: tuple[int, int]

    @abstractmethod
    def image_tiles(self, height: int, width: int) -> ImageTiles | None:
        """The resizes, windows and text of an image of ``height`` x ``width`` pixels, or
        None for an image the processor refuses (the batch then calls it, and the error
        names the sample)."""

    def sample_tiles(self, sizes: Sequence[tuple[int, int]]) -> list[ImageTiles | None]:
        """One sample's images' tiles, from their ``(height, width)``: each image on its
        own (:meth:`image_tiles`) unless the family treats a sample's images together
        (LLaVA-OneVision tiles an image only when it is its sample's one image)."""
        return [self.image_tiles(h, w) for h, w in sizes]

    def expanded_text(self, text: str, images: Sequence[ImageTiles]) -> str | None:
        """``text`` with its image placeholders replaced, in order, by ``images``' texts;
        None when the counts differ (the processor path then reports it)."""
        parts = text.split(self.placeholder)
        if len(parts) != len(images) + 1:
            return None
        out = [parts[0]]
        for image, part in zip(images, parts[1:], strict=True):
            out += [image.text, part]
        return "".join(out)

    def repeated(self) -> int | None:
        """The token id each image's ``text`` holds once per run of it the processor
        writes (its :attr:`ImageTiles.repeats` say how long each run is): the engine
        repeats it after one tokenizer call on the short texts, which costs far less than
        tokenizing the runs. Only for a token that tokenizes alone wherever it stands
        (a special token). None: the texts are written in full."""
        return None

    def output_dtype(self) -> torch.dtype:
        """The dtype of the processor's ``pixel_values`` (what its rescale and normalise
        returns: float32, or bfloat16 for Llama 4), written unless the caller asks for
        another."""
        return torch.float32

    def tile_size(self, images: Sequence[Sequence[ImageTiles]]) -> tuple[int, int]:
        """The batch's tile (height, width); ``images``: each sample's images."""
        return self.tile

    def slots(self, images: Sequence[Sequence[ImageTiles]]) -> tuple[int, list[int] | None]:
        """How many tiles the output holds, and each window's slot in the order the
        images and windows are given (None: one after another, no padding slots). Slots
        no window writes are zeros."""
        return sum(len(t.windows) for sample in images for t in sample), None

    @abstractmethod
    def outputs(
        self,
        pixel_values: torch.Tensor,
        images: Sequence[Sequence[ImageTiles]],
        encoded: dict[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """The batch as the processor returns it (its keys, in its order), from the
        ``(slots, 3, height, width)`` tiles, each sample's images, and ``encoded``'s
        ``input_ids`` and ``attention_mask``."""
