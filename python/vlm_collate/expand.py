"""Media placeholder expansion: one placeholder per image becomes as many tokens
as the vision tower produces, so sequence length is fixed before the model runs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from . import engine
from .engine import as_int64
from .errors import SampleError

if TYPE_CHECKING:
    from .profile import ProcessorProfile


def image_token_counts(grid_thws: Any, merge_kernel_size: tuple[int, int] = (2, 2)) -> np.ndarray:
    """Tokens per image, ``t * (h / mh) * (w / mw)``, from an ``(N, 3)`` grid."""
    grids = as_int64(grid_thws)
    if grids.ndim != 2 or grids.shape[1] != 3:
        raise SampleError(f"grid_thws must have shape (N, 3), got {tuple(grids.shape)}")
    return engine.tokens_per_grid(grids, tuple(merge_kernel_size))


def expand_image_tokens(
    input_ids: Any,
    attention_mask: Any,
    grid_thws: Any,
    media_token_id: int,
    merge_kernel_size: tuple[int, int] = (2, 2),
    pad_id: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Expands the i-th ``media_token_id`` placeholder to the token count of row i of
    ``grid_thws``; returns ``(input_ids, attention_mask)`` as tensors.

    ``input_ids`` is one sample ``(L,)`` or a right-padded batch ``(B, L)``; any
    number of images per sample. Each row owns as many grid rows as it holds
    placeholders, in order; a mismatch is a ValueError naming both counts.
    """
    ids, mask = as_int64(input_ids), as_int64(attention_mask)
    if ids.shape != mask.shape or ids.ndim not in (1, 2):
        raise SampleError(
            f"input_ids {tuple(ids.shape)} and attention_mask {tuple(mask.shape)} must have "
            "the same shape, (L,) or (B, L)"
        )
    counts = image_token_counts(grid_thws, merge_kernel_size)
    placeholders = ids == media_token_id
    total = int(placeholders.sum())
    if total != len(counts):
        raise SampleError(
            f"input_ids hold {total} image placeholders (id {media_token_id}) "
            f"but grid_thws describes {len(counts)} images"
        )
    if ids.ndim == 1:
        repeats = np.ones_like(ids)
        repeats[placeholders] = counts
        return torch.from_numpy(np.repeat(ids, repeats)), torch.from_numpy(np.repeat(mask, repeats))
    per_row = placeholders.sum(axis=1).astype(np.int64)
    out_ids, out_mask = engine.expand_placeholders(
        ids, mask, int(media_token_id), counts, per_row, int(pad_id), "right"
    )
    return torch.from_numpy(out_ids), torch.from_numpy(out_mask)


_GRID_KEYS = {
    "image": ("image_grid_thw", "grid_thws", "image_grid_hws"),
    "video": ("video_grid_thw",),
}
"""Keys under which processors return each kind's grid rows, ``(N, 3)`` or ``(N, 2)``."""


def check_expanded_media(
    profile: ProcessorProfile,
    encoded: Mapping[str, Any],
    kind: str,
    items_per_sample: list[int],
    indices: list[int],
) -> None:
    """Checks that each sample holds as many of the ``kind`` tokens the processor repeats
    (``profile.media[kind].expanded_id``) as its grid rows give with the profile's merge
    kernel; a mismatch is a :class:`SampleError` naming the sample and both numbers. A
    processor that returns no grid for ``kind``, or has no merge kernel, is not checked."""
    media = profile.media.get(kind)
    key = next((k for k in _GRID_KEYS.get(kind, ()) if encoded.get(k) is not None), None)
    if media is None or media.expanded_id is None or profile.merge_kernel is None:
        return
    if key is None:
        return
    grids = as_int64(encoded[key])
    grids = grids.reshape(-1, grids.shape[-1]) if grids.size else np.zeros((0, 3), np.int64)
    if grids.shape[1] == 2:  # (h, w) rows: one frame each
        grids = np.concatenate([np.ones((len(grids), 1), np.int64), grids], axis=1)
    if len(grids) != sum(items_per_sample):
        raise SampleError(
            f"the processor returned {len(grids)} {kind} grid rows "
            f"for {sum(items_per_sample)} {kind}s"
        )
    found = (as_int64(encoded["input_ids"]) == media.expanded_id).sum(axis=1)
    counts = image_token_counts(grids, profile.merge_kernel) if len(grids) else np.zeros(0)
    bounds = np.concatenate([[0], np.cumsum(items_per_sample)]).astype(int)
    for k, index in enumerate(indices):
        expected = int(counts[bounds[k] : bounds[k + 1]].sum())
        if int(found[k]) != expected:
            raise SampleError(
                f"sample {index}: {int(found[k])} {kind} tokens in input_ids but its grid rows "
                f"give {expected}; the processor's expansion and grids disagree"
            )
