"""The engine boundary: every call into the Rust engine (``_engine``) goes through this
module, with the conversions it needs (int64, C-contiguous, ragged rows) and the label
value the loss ignores, ``IGNORE_INDEX``, taken from the engine. The engine raises every
refusal as :class:`~vlm_collate.errors.EngineError`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ._engine import (
    IGNORE_INDEX,
    RopeSpec,
    expand_placeholders,
    find_subsequence,
    fit_rows,
    fitted_lengths,
    labels_from_contents,
    labels_from_markers,
    pack_bins,
    packed_layout,
    pad_rows,
    padded_rope_positions,
    pixel_rows,
    rope_positions,
    tokens_per_grid,
    unpad,
    write_pixel_values,
    write_planes,
    write_tiles,
    write_video_pixel_values,
)
from .errors import EngineError

__all__ = [
    "IGNORE_INDEX",
    "as_int64",
    "expand_placeholders",
    "find_subsequence",
    "fit_rows",
    "fitted_lengths",
    "labels_from_contents",
    "labels_from_markers",
    "pack_bins",
    "packed_layout",
    "pad_rows",
    "padded_rope_positions",
    "pixel_rows",
    "ragged",
    "RopeSpec",
    "rope_positions",
    "tokens_per_grid",
    "unpad",
    "write_pixel_values",
    "write_planes",
    "write_tiles",
    "write_video_pixel_values",
]


def as_int64(x: Any, name: str = "token ids") -> np.ndarray:
    """``x`` (tensor, array or nested list) as a C-contiguous int64 array, copying only
    when its dtype or layout requires. Floating-point, complex and boolean ids are
    refused with an :class:`~vlm_collate.errors.EngineError` (a float id is a bug
    upstream, never silently truncated)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    array = np.asarray(x)
    if array.dtype.kind not in "iu" and not (array.dtype.kind == "O" and array.size == 0):
        if array.size == 0 and array.dtype.kind == "f":
            return np.zeros(array.shape, dtype=np.int64)
        raise EngineError(
            f"{name} must be integers, got an array of dtype {array.dtype}; "
            "token ids and masks are integer tensors (pass input_ids, not embeddings or logits)"
        )
    if array.dtype.kind == "u" and array.size and int(array.max()) > np.iinfo(np.int64).max:
        raise EngineError(f"{name} holds values beyond int64")
    return np.ascontiguousarray(array, dtype=np.int64)


def ragged(rows: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """``(values, offsets)`` of rows of different lengths, for the engine."""
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] == 0:
        return np.zeros(0, dtype=np.int64), offsets
    values = np.concatenate([as_int64(r).reshape(-1) for r in rows])
    return values, offsets
