"""Batch shapes: fixed-length padding, next-token shift, and torch conversion.

The shift happens here and only here: labels lose their first column and the
token-axis tensors, named explicitly in ``TOKEN_AXIS_KEYS``, lose their last.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

from .engine import IGNORE_INDEX

TOKEN_AXIS_KEYS: tuple[str, ...] = (
    "input_ids",
    "attention_mask",
    "token_type_ids",
    "mm_token_type_ids",
    "loss_mask",
)
"""Keys whose tensors run along the token axis of ``input_ids``, shifted with it."""

_PAD_VALUES = {"input_ids": None, "labels": IGNORE_INDEX}


def as_tensor(value: Any) -> Any:
    """Tensors from numpy arrays without a copy; other values unchanged."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    return value


def token_axis_keys(batch: Mapping[str, Any], extra: Iterable[str] = ()) -> list[str]:
    """The token-axis keys present in ``batch`` (plus ``labels`` and ``extra``)."""
    names = (*TOKEN_AXIS_KEYS, "labels", *extra)
    return [k for k in dict.fromkeys(names) if k in batch and batch[k] is not None]


def pad_columns(batch: dict[str, Any], length: int, pad_id: int, keys: Iterable[str]) -> None:
    """Right-pads the token-axis tensors of ``batch`` in place to ``length`` columns
    (``input_ids`` with ``pad_id``, ``labels`` with -100, the rest with 0)."""
    for key in keys:
        value = torch.as_tensor(batch[key])
        missing = length - value.shape[-1]
        if missing <= 0:
            continue
        fill = _PAD_VALUES.get(key, 0)
        fill = pad_id if fill is None else fill
        pad = torch.full((*value.shape[:-1], missing), fill, dtype=value.dtype)
        batch[key] = torch.cat([value, pad], dim=-1)


def trim_columns(batch: dict[str, Any], length: int, keys: Iterable[str]) -> None:
    """Keeps the first ``length`` columns of the token-axis tensors, in place."""
    for key in keys:
        batch[key] = torch.as_tensor(batch[key])[..., :length]


def padded_length(longest: int, max_length: int | None, pad_to_multiple_of: int | None) -> int:
    """Batch length: ``max_length`` when fixed, else the longest row, then rounded up
    to a multiple of ``pad_to_multiple_of``."""
    length = max_length if max_length is not None else longest
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    return length


def shift_for_next_token(batch: dict[str, Any], keys: Iterable[str]) -> None:
    """Pre-shifts a batch in place as the seed does: ``labels[:, 1:]`` and every other
    token-axis tensor ``[:, :-1]``, so position i predicts label i."""
    for key in keys:
        value = batch[key]
        batch[key] = value[..., 1:] if key == "labels" else value[..., :-1]
