"""Batch shapes: the returned layout (truncation, next-token shift, padding on either
side) and the conversion to torch or numpy.

The shift happens here and only here: labels lose their first column and the
token-axis tensors, named explicitly in ``TOKEN_AXIS_KEYS``, lose their last.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch

from . import engine
from .errors import CollateError

TOKEN_AXIS_KEYS: tuple[str, ...] = (
    "input_ids",
    "attention_mask",
    "token_type_ids",
    "mm_token_type_ids",
    "loss_mask",
)
"""Keys whose tensors run along the token axis of ``input_ids``, shifted with it."""


def as_tensor(value: Any) -> Any:
    """Tensors from numpy arrays without a copy; other values unchanged."""
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(value))
    return value


def token_axis_keys(batch: Mapping[str, Any], extra: Iterable[str] = ()) -> list[str]:
    """The token-axis keys present in ``batch`` (plus ``labels`` and ``extra``)."""
    names = (*TOKEN_AXIS_KEYS, "labels", *extra)
    return [k for k in dict.fromkeys(names) if k in batch and batch[k] is not None]


def row_lengths(attention_mask: torch.Tensor) -> np.ndarray:
    """Attended tokens per row of a right-padded mask; a mask with padding before a
    token (left padding, or holes) is a :class:`CollateError`."""
    attended = attention_mask.reshape(attention_mask.shape[0], -1) != 0
    if attended.shape[1] > 1 and bool((attended[:, 1:] > attended[:, :-1]).any()):
        raise CollateError(
            "the processor returned a padded row whose padding is not on the right; "
            "set its tokenizer's padding_side='right' (vlm_collate pads on the requested side)"
        )
    return attended.sum(dim=1).numpy().astype(np.int64)


def padded_length(longest: int, max_length: int | None, pad_to_multiple_of: int | None) -> int:
    """Batch length: ``max_length`` when fixed, else the longest row, then rounded up
    to a multiple of ``pad_to_multiple_of``."""
    length = max_length if max_length is not None else longest
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    return length


def shifted(value: torch.Tensor, key: str) -> torch.Tensor:
    """``value`` pre-shifted for next-token prediction, as the seed does: ``labels``
    lose their first column, every other token-axis tensor its last, so position i
    predicts label i (contiguous: losses ``view`` the labels)."""
    return (value[..., 1:] if key == "labels" else value[..., :-1]).contiguous()


def fitted(
    value: torch.Tensor, lengths: np.ndarray, length: int, fill: int, side: str
) -> torch.Tensor:
    """A right-padded ``(B, ..., L)`` tensor re-laid at ``length`` columns: row b's first
    ``min(lengths[b], length)`` values at the start (``side="right"``) or the end
    (``"left"``), ``fill`` elsewhere. int64 matrices go through the engine."""
    fit_rows = getattr(engine, "fit_rows", None)
    if fit_rows is not None and value.dtype == torch.int64 and value.ndim == 2:
        out = fit_rows(engine.as_int64(value), lengths, length, fill, side)
        return torch.from_numpy(out)
    out = torch.full((*value.shape[:-1], length), fill, dtype=value.dtype)
    for b, n in enumerate(np.minimum(lengths, length).tolist()):
        start = 0 if side == "right" else length - n
        out[b, ..., start : start + n] = value[b, ..., :n]
    return out


def converted(batch: Mapping[str, Any], return_tensors: str) -> dict[str, Any]:
    """``batch`` with torch tensors (``"pt"``) or numpy arrays (``"np"``; bfloat16,
    which numpy lacks, becomes float32)."""
    if return_tensors == "pt":
        return dict(batch)
    out = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu()
            value = (value.float() if value.dtype == torch.bfloat16 else value).numpy()
        out[key] = value
    return out
