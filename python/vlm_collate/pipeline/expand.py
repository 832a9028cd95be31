"""Media placeholder expansion: one placeholder per image becomes as many tokens
as the vision tower produces, so sequence length is fixed before the model runs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from .. import engine
from ..engine import as_int64
from ..errors import SampleError

if TYPE_CHECKING:
    from ..processor.profile import ProcessorProfile


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


def _grid_rows(encoded: Mapping[str, Any], kind: str) -> np.ndarray | None:
    """The ``(N, 3)`` grid rows the processor returned for ``kind`` (``(h, w)`` rows get
    ``t = 1``), or None when it returned none."""
    key = next((k for k in _GRID_KEYS.get(kind, ()) if encoded.get(k) is not None), None)
    if key is None:
        return None
    grids = as_int64(encoded[key])
    grids = grids.reshape(-1, grids.shape[-1]) if grids.size else np.zeros((0, 3), np.int64)
    if grids.shape[1] == 2:
        grids = np.concatenate([np.ones((len(grids), 1), np.int64), grids], axis=1)
    return grids


def check_expanded_media(
    profile: ProcessorProfile,
    encoded: Mapping[str, Any],
    items_per_sample: Mapping[str, list[int]],
    indices: list[int],
) -> None:
    """Checks that each sample holds as many of the tokens the processor repeats for a
    media kind (``profile.media[kind].expanded_id``) as its grid rows give with the
    profile's merge kernel; kinds that repeat the same token (GLM-4.1V's video frames
    and images) are checked together. A mismatch is a :class:`SampleError` naming the
    sample and both numbers. Kinds without grids, or a profile without a merge kernel,
    are not checked. ``items_per_sample``: kind -> each sample's item count."""
    if profile.merge_kernel is None:
        return
    expected: dict[int, np.ndarray] = {}
    unchecked: set[int] = set()
    for kind, counts in items_per_sample.items():
        media = profile.media.get(kind)
        if media is None or media.expanded_id is None:
            continue
        grids = _grid_rows(encoded, kind)
        if grids is None:
            if any(counts):
                unchecked.add(media.expanded_id)
            continue
        if len(grids) != sum(counts):
            raise SampleError(
                f"the processor returned {len(grids)} {kind} grid rows for {sum(counts)} {kind}s"
            )
        tokens = image_token_counts(grids, profile.merge_kernel) if len(grids) else np.zeros(0)
        bounds = np.concatenate([[0], np.cumsum(counts)]).astype(int)
        per_row = np.array(
            [int(tokens[bounds[k] : bounds[k + 1]].sum()) for k in range(len(counts))]
        )
        expected[media.expanded_id] = expected.get(media.expanded_id, 0) + per_row
    ids = as_int64(encoded["input_ids"])
    names = {m.expanded_id: m.kind for m in reversed(list(profile.media.values()))}
    for tid, want in expected.items():
        if tid in unchecked:
            continue
        found = (ids == tid).sum(axis=1)
        for k, index in enumerate(indices):
            if int(found[k]) != int(want[k]):
                raise SampleError(
                    f"sample {index}: {int(found[k])} {names[tid]} tokens in input_ids but its "
                    f"grid rows give {int(want[k])}; the processor's expansion and grids disagree"
                )
