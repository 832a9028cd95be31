"""Conversions at the engine boundary: int64, C-contiguous, ragged rows."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def as_int64(x: Any) -> np.ndarray:
    """``x`` (tensor, array or nested list) as a C-contiguous int64 array, copying only
    when its dtype or layout requires."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.ascontiguousarray(x, dtype=np.int64)


def ragged(rows: Sequence[Sequence[int]]) -> tuple[np.ndarray, np.ndarray]:
    """``(values, offsets)`` of rows of different lengths, for the engine."""
    lengths = np.fromiter((len(r) for r in rows), dtype=np.int64, count=len(rows))
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    if offsets[-1] == 0:
        return np.zeros(0, dtype=np.int64), offsets
    values = np.concatenate([np.asarray(r, dtype=np.int64).reshape(-1) for r in rows])
    return values, offsets
