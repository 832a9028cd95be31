"""The tiled fast path: the encode step every tiled family shares (InternVL,
LLaVA-OneVision, Idefics3/SmolVLM, Pixtral, Llama 3.2 Vision, Llama 4).

Each image's placeholder in the rendered text is replaced by the text its plan gives
for that image's tiles, the batch is tokenized once and padded by the engine, and the
engine writes every tile of every image (resized by torch's antialiased uint8
arithmetic, windows cut, padding filled, rescaled and normalised through the
processor's own byte table) into one ``(slots, 3, height, width)`` tensor, images in
parallel with the GIL released; the family's plan then shapes the processor's keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from .. import engine
from ..engine import as_int64
from ..processor.profile import ProcessorProfile, profile_of
from ..processor.tiles import ImageTiles, has_tile_plan, tile_plan
from ..processor.tiles.base import install_allocator
from ..processor.tokens import batch_token_ids
from .fast_path import OutputBuffers, _threads, _typed, engine_pixels, output_tensor

__all__ = ["has_tile_plan", "tiled_call", "tiled_encoding"]

KEY_BUFFERS = OutputBuffers()
"""The pool a plan's other large keys (:func:`~..processor.tiles.base.key_tensor`: a
pixel mask) draw from outside DataLoader workers, apart from ``pixel_values``' pool so
that neither evicts the other."""


def _key_tensor(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """A plan's other large key: in shared memory in a DataLoader worker (as
    :func:`.fast_path.output_tensor`), else on a storage of :data:`KEY_BUFFERS` that
    no earlier batch still refers to."""
    if int(np.prod(shape)) == 0 or torch.utils.data.get_worker_info() is not None:
        return output_tensor(shape, dtype)
    return KEY_BUFFERS.tensor(shape, dtype)


install_allocator(_key_tensor)


def _size(image: Any) -> tuple[int, int]:
    if hasattr(image, "shape"):
        return int(image.shape[0]), int(image.shape[1])
    return int(image.height), int(image.width)


def _engine_rows(
    per_image: Sequence[ImageTiles], slots: list[int] | None
) -> tuple[np.ndarray, np.ndarray, list[int | None]]:
    """The engine's ``resizes`` and ``tiles`` rows for ``per_image``, and the fills."""
    resizes: list[tuple[int, int, int, int]] = []
    tiles: list[tuple[int, int, int, int, int]] = []
    fills: list[int | None] = []
    k = 0
    for i, image in enumerate(per_image):
        first = len(resizes)
        for source, height, width in image.resizes:
            resizes.append((i, -1 if source < 0 else first + source, height, width))
        if image.fill not in fills:
            fills.append(image.fill)
        fill = fills.index(image.fill)
        for resize, top, left in image.windows:
            slot = k if slots is None else slots[k]
            tiles.append((first + resize, top, left, slot, fill))
            k += 1
    return (
        np.asarray(resizes, dtype=np.int64).reshape(-1, 4),
        np.asarray(tiles, dtype=np.int64).reshape(-1, 5),
        fills,
    )


def _fill_values(fills: list[int | None], table: torch.Tensor) -> torch.Tensor:
    """Each fill's three values in output space: a byte through the table, or 0.0."""
    rows = [table.view(3, 256)[:, fill] if fill is not None else torch.zeros(3) for fill in fills]
    return torch.stack(rows).reshape(-1) if rows else torch.zeros(3)


def _source(image: Any, tiles: ImageTiles) -> np.ndarray:
    """What the engine resizes: the image's pixels read in place (a PIL image's own
    buffer as ``(H, W, 4)`` RGBX, :func:`.fast_path.engine_pixels`), or a padded
    ``(H, W, 3)`` copy where ``tiles.source_pad`` says the processor pads it before
    resizing."""
    if tiles.source_pad is None:
        return engine_pixels(image)
    array = np.asarray(image, dtype=np.uint8)
    (top, bottom, left, right), color = tiles.source_pad
    h, w = array.shape[:2]
    padded = np.empty((top + h + bottom, left + w + right, 3), dtype=np.uint8)
    padded[...] = np.asarray(color, dtype=np.uint8)
    padded[top : top + h, left : left + w] = array
    return padded


def _zero_unwritten(out: torch.Tensor, slots: list[int]) -> None:
    """Zeroes the slots of ``out`` that no window writes (in runs); the written ones are
    overwritten whole by the engine, so they are not cleared first."""
    unwritten = np.ones(out.shape[0], dtype=np.int8)
    unwritten[np.asarray(slots, dtype=np.int64)] = 0
    edges = np.flatnonzero(np.diff(unwritten, prepend=0, append=0))
    for start, stop in zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True):
        out[start:stop].zero_()


def tiled_encoding(
    processor: Any,
    texts: Sequence[str],
    images: Sequence[Sequence[Any]],
    *,
    pixel_dtype: torch.dtype | None = None,
    add_special_tokens: bool = True,
) -> dict[str, torch.Tensor] | None:
    """What the tiled family's ``processor(text=texts, images=..., padding=True,
    padding_side="right", return_tensors="pt")`` returns, built in one pass, or None when
    the fast path does not reproduce this processor or batch (an image not RGB, a
    placeholder count that differs from the images): then the caller calls the processor.
    ``images``: each sample's RGB images."""
    profile = profile_of(processor)
    plan = tile_plan(profile)
    if plan is None:
        return None
    flat = [image for sample in images for image in sample]
    if any(getattr(image, "mode", "RGB") != "RGB" for image in flat):
        return None
    found = [t for sample in images for t in plan.sample_tiles([_size(i) for i in sample])]
    per_image = [tiles for tiles in found if tiles is not None]
    if len(per_image) != len(found):  # an image the processor refuses: it reports it
        return None
    per_sample: list[list[ImageTiles]] = []
    expanded = []
    start = 0
    for text, sample in zip(texts, images, strict=True):
        mine = per_image[start : start + len(sample)]
        start += len(sample)
        written = plan.expanded_text(text, mine)
        if written is None:
            return None
        per_sample.append(mine)
        expanded.append(written)
    tokens = batch_token_ids(profile.tokenizer, expanded, add_special_tokens)
    values, offsets = engine.ragged(tokens)
    ids, mask = engine.pad_rows(values, offsets, plan.pad_id, "right")
    repeated = plan.repeated()
    if repeated is not None and per_image:  # runs of a special token, written by the engine
        counts = [n for image in per_image for n in image.repeats]
        per_row = [sum(len(image.repeats) for image in sample) for sample in per_sample]
        ids, mask = engine.expand_placeholders(
            ids, mask, repeated, as_int64(counts), as_int64(per_row), plan.pad_id, "right"
        )
    encoded = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
    height, width = plan.tile_size(per_sample)
    count, slots = plan.slots(per_sample)
    out = output_tensor((count, 3, height, width), pixel_dtype or plan.output_dtype())
    if slots is not None:
        _zero_unwritten(out, slots)
    if flat:
        resizes, tiles, fills = _engine_rows(per_image, slots)
        arrays = [_source(image, tiles) for image, tiles in zip(flat, per_image, strict=True)]
        out_view, table = _typed(out, plan.table)
        _, fill_values = _typed(out, _fill_values(fills, plan.table))
        engine.write_tiles(
            arrays, resizes, tiles, out_view, table, fill_values, plan.interpolation, _threads()
        )
    return plan.outputs(out, per_sample, encoded)


def tiled_call(profile: ProcessorProfile, options: Any) -> Any:
    """The shared encode step's ``call`` quirk for a tiled family: the fast encoding of the
    collected batch, or None for a batch it does not reproduce (videos, pixel budgets: the
    encode step then calls the processor). None instead of a quirk when
    ``options.fast_path`` is off or the processor's settings are not reproduced."""
    if not getattr(options, "fast_path", True) or tile_plan(profile) is None:
        return None

    def call(profile: ProcessorProfile, collected: Any) -> dict[str, Any] | None:
        if collected.per_sample("video") and any(collected.per_sample("video")):
            return None
        if getattr(collected, "budget", None) is not None:
            return None
        return tiled_encoding(
            profile,
            collected.texts,
            collected.per_sample("image"),
            add_special_tokens=False,
        )

    return call
