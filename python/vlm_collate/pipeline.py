"""The one collate pipeline every model family shares.

A family supplies only ``encode``: examples and their conversations in, a dict
with right-padded ``input_ids`` and ``attention_mask`` (plus the processor's
media tensors) out. The pipeline validates, labels, applies the overflow and
unlabeled policies, pads, shifts and reports.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from . import engine
from .batch import as_tensor, converted, lay_out, row_lengths, token_axis_keys
from .conversation import assistant_turns, conversations_of
from .encode_errors import encoded_naming_sample
from .engine import IGNORE_INDEX, as_int64
from .errors import CollateError, SampleError, SampleTooLongError
from .labels import label_array
from .options import CollateOptions, OnOverflow, OnUnlabeled, collate_options
from .profile import profile_of
from .report import Batch, BatchReport
from .special_text import escaped_special_text, labels_with_special_text, refuse_media_text

logger = logging.getLogger("vlm_collate")

Encoder = Callable[[list[Any], list[list[dict[str, Any]]], list[int]], dict[str, Any]]
"""(examples, their conversations, their indices in the input batch) -> encoded batch."""
Labeler = Callable[[dict[str, Any], list[list[dict[str, Any]]]], np.ndarray]

__all__ = [
    "CollateOptions",
    "Encoder",
    "Labeler",
    "OnOverflow",
    "OnUnlabeled",
    "collate_options",
    "collate_with",
    "default_labeler",
]


def default_labeler(processor: Any, reasoning: str = "label") -> Labeler:
    """Labels from the chat template's verified markers (or the exact path)."""

    def label(encoded: dict[str, Any], conversations: list[list[dict[str, Any]]]) -> np.ndarray:
        labels, _ = label_array(
            encoded["input_ids"],
            conversations,
            processor,
            encoded.get("attention_mask"),
            reasoning=reasoning,
        )
        return labels

    return label


def _unlabeled_policy(
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


def _overflow_policy(
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


def _empty_rows_policy(
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


def collate_with(
    examples: Sequence[Any],
    processor: Any,
    encode: Encoder,
    options: CollateOptions,
    *,
    labeler: Labeler | None = None,
    media_ids: Sequence[int] | None = None,
    extra_token_keys: Sequence[str] = (),
    shift_labels: bool = True,
) -> Batch:
    """Runs the shared pipeline on ``examples`` with the family's ``encode`` (which
    returns right-padded token-axis tensors). With ``options.shift`` and
    ``shift_labels`` the pre-shifted targets are also returned as ``shift_labels``
    (an encoder-decoder family, whose loss never shifts, passes ``False``)."""
    if not isinstance(options, CollateOptions):
        raise CollateError(f"options must be a CollateOptions, got {type(options).__name__}")
    conversations = conversations_of(examples)
    report = BatchReport(samples=len(conversations))
    labeler = labeler or default_labeler(processor, options.reasoning)
    profile = profile_of(processor)
    pad_id = profile.require_pad_id()
    keep = _unlabeled_policy(conversations, options, report)
    refuse_media_text([conversations[i] for i in keep], keep, processor)
    if options.max_length is not None and media_ids is None:
        media_ids = profile.media_ids
    while True:
        if not keep:
            raise CollateError(
                f"every sample of the batch was dropped: {report.dropped}; fix those samples, "
                "raise max_length, or use on_overflow='truncate' / on_unlabeled='warn' to keep them"
            )
        kept = [conversations[i] for i in keep]
        encoded = escaped_special_text(
            encoded_naming_sample(encode, [examples[i] for i in keep], kept, list(keep)),
            kept, list(keep), processor, options.on_special_text,
        )  # fmt: skip
        report.truncated = []
        if options.max_length is not None:
            blocks = (list(profile.block_opens), list(profile.block_closes))
            stay = _overflow_policy(encoded, keep, options, list(media_ids or ()), report, blocks)
            if len(stay) < len(keep):
                keep = [keep[k] for k in stay]
                continue
        labels = labels_with_special_text(
            labeler, encoded, kept, processor, options.on_special_text
        )
        lengths = row_lengths(torch.as_tensor(encoded["attention_mask"]))
        if options.max_length is not None:
            lengths = np.minimum(lengths, options.max_length)
        stay = _empty_rows_policy(labels, lengths, keep, conversations, options, report)
        if len(stay) == len(keep):
            break
        keep = [keep[k] for k in stay]
    batch = {k: as_tensor(v) for k, v in encoded.items()}
    batch["labels"] = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))
    keys = token_axis_keys(batch, [*extra_token_keys, *profile.token_axes])
    lay_out(batch, keys, lengths, pad_id, options, profile.token_axes)
    targets = batch["labels"] != IGNORE_INDEX
    targets_per_row = targets.sum(dim=-1).tolist()
    report.target_tokens = int(sum(targets_per_row))
    report.unlabeled = [keep[k] for k, n in enumerate(targets_per_row) if n == 0]
    if report.unlabeled:
        logger.warning("samples %s have no target tokens", report.unlabeled)
    if options.label_pad_token_id != IGNORE_INDEX:
        batch["labels"] = batch["labels"].masked_fill(~targets, options.label_pad_token_id)
    if options.shift and shift_labels:
        batch["shift_labels"] = batch["labels"]
    logger.debug(report.summary())
    return Batch(converted(batch, options.return_tensors), report=report)
