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

from ..engine import IGNORE_INDEX
from ..errors import CollateError
from ..formats.conversation import conversations_of
from ..formats.rows import naming_rows, row_id
from ..options import CollateOptions, OnOverflow, OnUnlabeled, collate_options
from ..processor.profile import ProcessorProfile, profile_of
from ..report import Batch, BatchReport
from .labels import label_array
from .layout import as_tensor, converted, lay_out, row_lengths, token_axis_keys
from .loss_policies import LOSS_WEIGHTS, append_stop_tokens, hidden_stops, label_policies
from .policies import SHRUNK_KEY, empty_rows_policy, overflow_policy, unlabeled_policy
from .sample_errors import encoded_naming_sample
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


def default_labeler(
    profile: ProcessorProfile, reasoning: str = "label", exact_rows: list[list[int]] | None = None
) -> Labeler:
    """Labels from the chat template's verified markers (or the exact path). With
    ``exact_rows``, each call appends the list of its rows that the marker path could not
    vouch for (labelled by the exact path, see :func:`label_array`)."""

    def label(encoded: dict[str, Any], conversations: list[list[dict[str, Any]]]) -> np.ndarray:
        rows: list[int] = []
        labels, _ = label_array(
            encoded["input_ids"],
            conversations,
            profile,
            encoded.get("attention_mask"),
            reasoning=reasoning,  # type: ignore[arg-type]
            exact_rows=rows,
        )
        if exact_rows is not None:
            exact_rows.append(rows)
        return labels

    return label


def collate_with(
    examples: Sequence[Any],
    profile: ProcessorProfile,
    encode: Encoder,
    options: CollateOptions,
    **pipeline: Any,
) -> Batch:
    """Runs the shared pipeline on ``examples`` with the family's ``encode`` (which
    returns right-padded token-axis tensors). With ``options.shift`` and
    ``shift_labels`` the pre-shifted targets are also returned as ``shift_labels``
    (an encoder-decoder family, whose loss never shifts, passes ``False``). An error
    naming ``sample N`` names its dataset row too when the row carries an identity
    (:mod:`..formats.rows`)."""
    try:
        return _collated(examples, profile, encode, options, **pipeline)
    except CollateError as err:
        if isinstance(examples, Sequence):
            naming_rows(err, [row_id(e) for e in examples])  # the message names the row
        raise


def _collated(
    examples: Sequence[Any],
    profile: ProcessorProfile,
    encode: Encoder,
    options: CollateOptions,
    *,
    labeler: Labeler | None = None,
    media_ids: Sequence[int] | None = None,
    extra_token_keys: Sequence[str] = (),
    shift_labels: bool = True,
) -> Batch:
    if not isinstance(options, CollateOptions):
        raise CollateError(f"options must be a CollateOptions, got {type(options).__name__}")
    profile = profile_of(profile)
    conversations = conversations_of(examples, options.format)
    report = BatchReport(samples=len(conversations), row_ids=[row_id(e) for e in examples])
    policies = labeler is None  # a family's own labeler (encoder-decoder) labels as it does
    exact_calls: list[list[int]] = []  # per labeler call, its rows labelled by the exact path
    labeler = labeler or default_labeler(profile, options.reasoning, exact_calls)
    pad_id = profile.require_pad_id()
    keep = unlabeled_policy(conversations, options, report)
    refuse_media_text([conversations[i] for i in keep], keep, profile)
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
            kept, list(keep), profile, options.on_special_text,
        )  # fmt: skip
        report.shrunk = list(encoded.pop(SHRUNK_KEY, []))
        axes = [*extra_token_keys, *profile.token_axes]
        stops = (
            append_stop_tokens(encoded, kept, profile, options, token_axis_keys(encoded, axes))
            if policies
            else np.full(len(kept), -1, dtype=np.int64)
        )
        report.truncated = []
        if options.max_length is not None:
            blocks = (list(profile.block_opens), list(profile.block_closes))
            stay = overflow_policy(encoded, keep, options, list(media_ids or ()), report, blocks)
            if len(stay) < len(keep):
                keep = [keep[k] for k in stay]
                continue
        exact_calls.clear()
        labels = labels_with_special_text(
            labeler, hidden_stops(encoded, stops), kept, profile, options.on_special_text
        )
        # The first call labels the whole batch (later ones: escaped twins of some rows).
        report.exact_rows = sorted({keep[i] for i in exact_calls[0]}) if exact_calls else []
        weights = None
        if policies:
            labels, weights = label_policies(labels, encoded, kept, profile, options, stops)
        lengths = row_lengths(torch.as_tensor(encoded["attention_mask"]))
        if options.max_length is not None:
            lengths = np.minimum(lengths, options.max_length)
        stay = empty_rows_policy(labels, lengths, keep, conversations, options, report)
        if len(stay) == len(keep):
            break
        keep = [keep[k] for k in stay]
    batch = {k: as_tensor(v) for k, v in encoded.items()}
    batch["labels"] = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))
    if weights is not None:
        batch[LOSS_WEIGHTS] = torch.from_numpy(weights)
    keys = token_axis_keys(batch, [*extra_token_keys, *profile.token_axes, LOSS_WEIGHTS])
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
