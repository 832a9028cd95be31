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

from .. import engine
from ..engine import IGNORE_INDEX
from ..errors import CollateError
from ..options import CollateOptions
from ..processor.profile import TOKEN_AXIS_KEYS


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


def fitted(
    value: torch.Tensor, lengths: np.ndarray, length: int, fill: int, side: str
) -> torch.Tensor:
    """A right-padded ``(B, ..., L)`` tensor re-laid at ``length`` columns: row b's first
    ``min(lengths[b], length)`` values at the start (``side="right"``) or the end
    (``"left"``), ``fill`` elsewhere. int64 matrices (ids, masks, labels) are laid out
    by the engine in one pass; other dtypes row by row here."""
    if value.dtype == torch.int64 and value.ndim == 2:
        out = engine.fit_rows(engine.as_int64(value), lengths, length, fill, side)
        return torch.from_numpy(out)
    out = torch.full((*value.shape[:-1], length), fill, dtype=value.dtype)
    for b, n in enumerate(np.minimum(lengths, length).tolist()):
        start = 0 if side == "right" else length - n
        out[b, ..., start : start + n] = value[b, ..., :n]
    return out


def lay_out(
    batch: dict[str, Any],
    keys: Iterable[str],
    lengths: np.ndarray,
    pad_id: int,
    options: CollateOptions,
    axes: Mapping[str, int] | None = None,
) -> None:
    """Lays the token-axis tensors of a right-padded ``batch`` out in place at the
    returned length: cut to ``max_length``, pre-shifted when ``options.shift``, padded
    (``pad_to_max_length``, ``pad_to_multiple_of``) on ``options.padding_side``.
    ``lengths``: each row's tokens after truncation.

    The shift is the seed's: ``labels`` lose their first column, every other
    token-axis tensor its last (the row's last token when it is the longest), so
    position i predicts label i (``loss_weights`` shift with ``labels``). Pad values:
    ``pad_id`` in ``input_ids``, -100 in ``labels``, 0 elsewhere. ``axes``: the token
    axis of keys where it is not the last (Mllama's ``cross_attention_mask``
    ``(B, L, images, tiles)``: 1)."""
    columns = int(batch["input_ids"].shape[-1])
    if options.max_length is not None:
        columns = min(columns, options.max_length)
    if options.shift:
        columns -= 1
        lengths = np.minimum(lengths, columns)
    target = padded_length(
        int(lengths.max(initial=0)),
        options.max_length if options.pad_to_max_length else None,
        options.pad_to_multiple_of,
    )
    unchanged = target == int(batch["input_ids"].shape[-1]) and options.padding_side == "right"
    if unchanged and not options.shift:
        return
    fills = {"input_ids": pad_id, "labels": IGNORE_INDEX}
    for key in keys:
        value = torch.as_tensor(batch[key])
        if options.shift and key in ("labels", "loss_weights"):  # targets lose the first
            value = value[..., 1:]
        axis = (axes or {}).get(key, value.ndim - 1) % max(value.ndim, 1)
        value = value.movedim(axis, -1)
        out = fitted(value, lengths, target, fills.get(key, 0), options.padding_side)
        batch[key] = out.movedim(-1, axis).contiguous() if axis != out.ndim - 1 else out


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
