"""Text-only batches under sharded training: one tiny image that trains nothing.

Under FSDP or ZeRO-3 every rank must run the same modules each step: a rank whose batch
holds no image skips the vision tower, the others wait for its parameters' gather, and
the job hangs. ``text_only_batches="fake_image"`` (an option of
:class:`~vlm_collate.packing.PackedCollator` and
:class:`~vlm_collate.packing.PackedIterableDataset`) and :func:`with_fake_image` (any
padded batch) give a batch without images or videos one tiny image, so the tower runs
on every rank, every step, while the loss and the gradients of the real tokens stay
what they were:

- the image is the smallest the processor takes (a 28 x 28 picture, resized by the
  processor's own rule: for Qwen2.5-VL 56 x 56, four merged tokens), collated by the
  batch's own collate function; only its media block is kept (``<|vision_start|>``, the
  image tokens, ``<|vision_end|>``), every label ignored;
- packed batches: the block is a document of its own (positions from 0, its own
  ``cu_seq_lens`` segment) in the tail padding of a row with room, else in a new row,
  so attention never crosses into it or out of it;
- padded batches: the block is written after a row's padding (the batch widened when no
  row has room) with ``attention_mask`` 0, so no real token attends to it; Qwen's
  ``get_rope_index`` skips masked tokens, and the model still scatters the tower's
  features into the block's tokens (it counts image tokens in ``input_ids``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..engine import IGNORE_INDEX
from ..errors import CollateError, OptionError
from ..processor.profile import profile_of
from .positions import ragged_rope_positions

TEXT_ONLY_BATCHES = (None, "keep", "fake_image")
FAKE_IMAGE_SIDE = 28
"""The side of the fake picture before the processor resizes it."""

_LABEL_KEYS = ("labels", "shift_labels")


def text_only_batches_option(value: Any) -> str | None:
    """``value`` checked: ``None``/``"keep"`` (text-only batches as they are) or
    ``"fake_image"``; returns ``"fake_image"`` or ``None``."""
    if value not in TEXT_ONLY_BATCHES:
        raise OptionError(
            f"text_only_batches must be one of {TEXT_ONLY_BATCHES}, got {value!r} "
            "('fake_image' adds one tiny ignored image to batches without media)"
        )
    return "fake_image" if value == "fake_image" else None


@dataclass(frozen=True)
class FakeImage:
    """The media block of one tiny image: its ``tokens`` (delimiters included), their
    ``mm_token_type_ids`` (None when the collate function gives none), and the
    processor's ``pixel_values`` / ``image_grid_thw`` for it."""

    tokens: np.ndarray
    token_types: np.ndarray | None
    pixel_values: torch.Tensor
    image_grid_thw: torch.Tensor

    def __len__(self) -> int:
        return len(self.tokens)


def fake_image(collator: Any) -> FakeImage:
    """The fake image block of ``collator`` (a :class:`~vlm_collate.VLMCollator`),
    collated once per processor and collate function (kept on the processor's profile)."""
    profile = profile_of(collator.processor)
    name = getattr(collator.collate_fn, "__name__", repr(collator.collate_fn))
    key = ("fake_image", name, repr(sorted(collator.options.items(), key=lambda kv: kv[0])))
    return profile.cached(key, lambda: _collated_fake_image(collator))


def _collated_fake_image(collator: Any) -> FakeImage:
    from PIL import Image

    profile = profile_of(collator.processor)
    image_kind = profile.media.get("image")
    if image_kind is None or image_kind.expanded_id is None and image_kind.placeholder_id is None:
        raise OptionError(
            f"text_only_batches='fake_image': {profile.processor_class} takes no images"
        )
    picture = Image.new("RGB", (FAKE_IMAGE_SIDE, FAKE_IMAGE_SIDE), (127, 127, 127))
    example = {
        "messages": [
            {"role": "user", "content": [{"type": "image", "image": picture}]},
            {"role": "assistant", "content": "."},
        ]
    }
    batch = collator([example])
    if batch.get("pixel_values") is None or batch.get("image_grid_thw") is None:
        raise OptionError(
            f"text_only_batches='fake_image' needs pixel_values and image_grid_thw; "
            f"{collator.collate_fn.__name__} gives {sorted(batch)}"
        )
    ids = np.asarray(batch["input_ids"][0], dtype=np.int64)
    mask = np.asarray(batch["attention_mask"][0], dtype=np.int64) != 0
    image_id = (
        image_kind.expanded_id if image_kind.expanded_id is not None else image_kind.placeholder_id
    )
    hits = np.flatnonzero((ids == image_id) & mask)
    if len(hits) == 0 or hits[-1] - hits[0] + 1 != len(hits):
        raise CollateError(
            f"the fake image of {collator.collate_fn.__name__} is not one run of image tokens"
        )
    start, end = int(hits[0]), int(hits[-1]) + 1
    if start > 0 and int(ids[start - 1]) in profile.block_opens:
        start -= 1
    if end < len(ids) and int(ids[end]) in profile.block_closes:
        end += 1
    types = batch.get("mm_token_type_ids")
    return FakeImage(
        tokens=ids[start:end].copy(),
        token_types=None if types is None else np.asarray(types[0][start:end], dtype=np.int64),
        pixel_values=batch["pixel_values"].clone(),
        image_grid_thw=torch.as_tensor(batch["image_grid_thw"]).reshape(-1, 3).clone(),
    )


def has_media(batch: Any) -> bool:
    """Whether ``batch`` holds an image or a video (the vision tower runs on it)."""
    return any(
        batch.get(key) is not None and len(batch[key]) > 0
        for key in ("pixel_values", "pixel_values_videos")
    )


def _fill(key: str, pad_id: int) -> Any:
    if key == "input_ids":
        return pad_id
    if key in _LABEL_KEYS:
        return IGNORE_INDEX
    return 0


def _token_keys(batch: Any, shape: tuple[int, ...]) -> list[str]:
    """The keys of ``batch`` laid out along (rows, columns) as ``input_ids``."""
    return [
        k
        for k, v in batch.items()
        if isinstance(v, torch.Tensor) and v.dim() >= 2 and tuple(v.shape[:2]) == shape
    ]


def _widened(value: torch.Tensor, rows: int, columns: int, fill: Any) -> torch.Tensor:
    """``value`` grown to ``(rows, columns, ...)`` (its first two axes), ``fill`` where new."""
    out = torch.full((rows, columns, *value.shape[2:]), fill, dtype=value.dtype)
    out[: value.shape[0], : value.shape[1]] = value
    return out


def _with_media(out: Any, fake: FakeImage) -> None:
    out["pixel_values"] = fake.pixel_values.clone()
    out["image_grid_thw"] = fake.image_grid_thw.clone()
    if "n_images_per_sample" in out and out["n_images_per_sample"] is not None:
        counts = torch.as_tensor(out["n_images_per_sample"]).clone()
        counts[0] += 1
        out["n_images_per_sample"] = counts


def _keep_shift_labels(out: Any, batch: Any) -> None:
    if batch.get("shift_labels") is not None and batch["shift_labels"] is batch.get("labels"):
        out["shift_labels"] = out["labels"]


def add_fake_image(batch: Any, collator: Any) -> Any:
    """``batch``, collated by ``collator`` (a :class:`~vlm_collate.VLMCollator` or a
    :class:`~vlm_collate.packing.PackedCollator`), with one tiny ignored image when it
    holds no image or video; ``batch`` itself otherwise. For padded batches::

        collate = VLMCollator(processor)
        batch = add_fake_image(collate(examples), collate)
    """
    if has_media(batch):
        return batch
    inner = getattr(collator, "inner", None)
    if inner is not None:  # a PackedCollator
        return with_fake_image(batch, fake_image(inner), collator.pad_id, collator.rope)
    pad_id = profile_of(collator.processor).require_pad_id()
    return with_fake_image(batch, fake_image(collator), pad_id)


def with_fake_image(batch: Any, fake: FakeImage, pad_id: int, rope: Any = None) -> Any:
    """``batch`` (packed: with ``cu_seq_lens_q``; padded: with ``attention_mask``) with
    ``fake`` added when it holds no image or video; ``batch`` itself otherwise. ``rope``:
    the packed collator's :class:`~vlm_collate.packing.RopeConfig` (None: 1-D positions)."""
    if has_media(batch):
        return batch
    if not isinstance(batch.get("input_ids"), torch.Tensor):
        raise OptionError("text_only_batches='fake_image' needs return_tensors='pt'")
    if batch.get("cu_seq_lens_q") is not None:
        return _packed_with_fake(batch, fake, pad_id, rope)
    if batch.get("attention_mask") is None:
        raise CollateError(
            "text_only_batches='fake_image' needs a packed batch (cu_seq_lens_q) or a padded "
            "one (attention_mask)"
        )
    return _padded_with_fake(batch, fake, pad_id)


def _padded_with_fake(batch: Any, fake: FakeImage, pad_id: int) -> Any:
    ids = batch["input_ids"]
    rows, width = ids.shape
    k = len(fake)
    mask = batch["attention_mask"]
    # Room after the last attended column of a row (right padding); else widen by k.
    attended = mask != 0
    last = torch.where(attended.any(1), width - attended.flip(1).int().argmax(1), 0)
    room = width - last
    row = int(room.argmax())
    out = copy.copy(batch)
    keys = _token_keys(batch, (rows, width))
    if int(room[row]) < k:
        width += k
        for key in keys:
            out[key] = _widened(batch[key], rows, width, _fill(key, pad_id))
    else:
        for key in keys:
            out[key] = batch[key].clone()
    cols = slice(width - k, width)
    out["input_ids"][row, cols] = torch.from_numpy(fake.tokens).to(ids.dtype)
    out["attention_mask"][row, cols] = 0
    if "mm_token_type_ids" in keys and fake.token_types is not None:
        out["mm_token_type_ids"][row, cols] = torch.from_numpy(fake.token_types).to(
            out["mm_token_type_ids"].dtype
        )
    _keep_shift_labels(out, batch)
    _with_media(out, fake)
    return out


def _packed_with_fake(batch: Any, fake: FakeImage, pad_id: int, rope: Any) -> Any:
    ids = batch["input_ids"]
    rows, width = ids.shape
    k = len(fake)
    report = getattr(batch, "report", None)
    ends = np.zeros(rows, dtype=np.int64)
    for _, r, start, n in getattr(report, "documents", []):
        ends[r] = max(ends[r], start + n)
    ends = np.minimum(ends, width)
    room = width - ends
    out = copy.copy(batch)
    keys = _token_keys(batch, (rows, width))
    positions = batch["position_ids"]
    if int(room.max(initial=0)) >= k:
        row = int(room.argmax())
        for key in keys:
            out[key] = batch[key].clone()
        positions = positions.clone()
    else:  # a new row of its own
        row, rows = rows, rows + 1
        width = max(width, k)
        for key in keys:
            out[key] = _widened(batch[key], rows, width, _fill(key, pad_id))
        grown = torch.zeros((*positions.shape[:-2], rows, width), dtype=positions.dtype)
        grown[..., : positions.shape[-2], : positions.shape[-1]] = positions
        positions = grown
        ends = np.concatenate([ends, [0]])
    start = int(ends[row])
    cols = slice(start, start + k)
    out["input_ids"][row, cols] = torch.from_numpy(fake.tokens).to(ids.dtype)
    if "mm_token_type_ids" in keys and fake.token_types is not None:
        out["mm_token_type_ids"][row, cols] = torch.from_numpy(fake.token_types).to(
            out["mm_token_type_ids"].dtype
        )
    # Positions: the fake document from 0, the padding after it from 0 again (its own
    # segment, as the packer lays out tail padding).
    tail = width - start - k
    text = torch.cat([torch.arange(k), torch.arange(tail)]).to(positions.dtype)
    if positions.dim() == 3:
        spatial = ragged_rope_positions(
            fake.tokens, np.array([0, k], dtype=np.int64), rope, fake.image_grid_thw.numpy()
        )
        rest = torch.arange(tail).to(positions.dtype).expand(3, tail)
        positions[0, row, start:] = text
        positions[1:, row, start:] = torch.cat(
            [torch.from_numpy(np.asarray(spatial)).to(positions.dtype), rest], dim=1
        )
    else:
        positions[row, start:] = text
    out["position_ids"] = positions
    _keep_shift_labels(out, batch)
    _with_media(out, fake)
    cu = _segments(positions[0] if positions.dim() == 3 else positions)
    cu32 = torch.from_numpy(cu.astype(np.int32))
    longest = int(np.diff(cu).max()) if len(cu) > 1 else 0
    out.update(cu_seq_lens_q=cu32, cu_seq_lens_k=cu32, max_length_q=longest, max_length_k=longest)
    return out


def _segments(text_positions: torch.Tensor) -> np.ndarray:
    """FlashAttention's ``cu_seq_lens`` of rows whose segments each start at position 0."""
    flat = text_positions.reshape(-1).numpy()
    starts = np.flatnonzero(flat == 0)
    if len(starts) == 0 or starts[0] != 0:
        starts = np.concatenate([[0], starts])
    return np.concatenate([starts, [len(flat)]]).astype(np.int64)


__all__ = [
    "FAKE_IMAGE_SIDE",
    "TEXT_ONLY_BATCHES",
    "FakeImage",
    "add_fake_image",
    "fake_image",
    "has_media",
    "text_only_batches_option",
    "with_fake_image",
]
