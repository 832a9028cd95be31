"""The sample policies of the pipeline: what a sample with no assistant turn, one longer
than ``max_length``, and a row left without a target get (``on_unlabeled``,
``on_overflow``); each returns the positions that stay and records the rest in the
batch report."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import engine
from ..engine import IGNORE_INDEX, as_int64
from ..errors import SampleError, SampleTooLongError
from ..formats.conversation import assistant_turns
from ..options import CollateOptions
from ..report import BatchReport

logger = logging.getLogger("vlm_collate")


def unlabeled_policy(
    conversations: list[list[dict[str, Any]]], options: CollateOptions, report: BatchReport
) -> list[int]:
    keep = []
    for i, conversation in enumerate(conversations):
        if assistant_turns(conversation):
            keep.append(i)
        elif options.on_unlabeled == "raise":
            raise SampleError(
                f"sample {i} has no assistant turn, so nothing to train on; "
                "fix the data or pass on_unlabeled='warn' or 'drop'"
            )
        elif options.on_unlabeled == "drop":
            report.dropped.append((i, "no assistant turn"))
        else:
            keep.append(i)
    return keep


def overflow_policy(
    encoded: dict[str, Any],
    keep: list[int],
    options: CollateOptions,
    media_ids: list[int],
    report: BatchReport,
    blocks: Sequence[list[int]] = ([], []),
) -> list[int]:
    """Positions (into ``keep``) of the samples that stay (cut later when truncating)."""
    limit = options.max_length
    ids, mask = as_int64(encoded["input_ids"]), as_int64(encoded["attention_mask"])
    lengths = (mask != 0).sum(axis=1)
    over = [k for k in range(len(keep)) if lengths[k] > limit]
    if not over:
        return list(range(len(keep)))
    if options.on_overflow == "error":
        k = over[0]
        raise SampleTooLongError(
            f"sample {keep[k]} has {int(lengths[k])} tokens, more than max_length={limit}; "
            "raise max_length or pass on_overflow='truncate' or 'drop'"
        )
    if options.on_overflow == "drop":
        for k in over:
            report.dropped.append((keep[k], f"{int(lengths[k])} tokens > max_length={limit}"))
        logger.warning(
            "samples %s are longer than max_length=%d; dropped (on_overflow='drop')",
            [keep[k] for k in over],
            limit,
        )
        return [k for k in range(len(keep)) if k not in set(over)]
    values, offsets = engine.unpad(ids, mask)
    fit = engine.fitted_lengths(values, offsets, limit, media_ids, *blocks)  # (opens, closes)
    stay = []
    for k in range(len(keep)):
        if fit[k] < 0:
            report.dropped.append(
                (keep[k], f"media reach past max_length={limit} ({int(lengths[k])} tokens)")
            )
            logger.warning(
                "sample %d: media reach past max_length=%d; dropped (media are never cut)",
                keep[k],
                limit,
            )
        else:
            stay.append(k)
            if lengths[k] > limit:
                report.truncated.append(keep[k])
    return stay


def empty_rows_policy(
    labels: np.ndarray,
    lengths: np.ndarray,
    keep: list[int],
    conversations: list[list[dict[str, Any]]],
    options: CollateOptions,
    report: BatchReport,
) -> list[int]:
    """Positions (into ``keep``) of the rows that stay: a row left without a target
    token (no assistant turn, or every reply token cut by truncation) follows
    ``on_unlabeled``. ``lengths`` are the rows' token counts after truncation."""
    columns = np.arange(labels.shape[1])[None, :]
    targets = ((labels != IGNORE_INDEX) & (columns < lengths[:, None])).sum(axis=1)
    stay = []
    for k, index in enumerate(keep):
        if targets[k] > 0 or not assistant_turns(conversations[index]):
            stay.append(k)  # rows without an assistant turn were decided before encoding
            continue
        cut = bool((labels[k, lengths[k] :] != IGNORE_INDEX).any())
        reason = (
            f"truncation at max_length={options.max_length} removed every reply token"
            if cut
            else "no reply token was found"
        )
        if options.on_unlabeled == "raise":
            raise SampleError(
                f"sample {index}: {reason}, so nothing to train on; "
                + (
                    "raise max_length or pass on_unlabeled='drop' or 'warn'"
                    if cut
                    else "check its assistant turns or pass on_unlabeled='drop' or 'warn'"
                )
            )
        if options.on_unlabeled == "drop":
            report.dropped.append((index, reason))
        else:
            stay.append(k)
    return stay
