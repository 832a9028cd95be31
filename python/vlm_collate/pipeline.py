"""The one collate pipeline every model family shares.

A family supplies only ``encode``: examples and their conversations in, a dict
with right-padded ``input_ids`` and ``attention_mask`` (plus the processor's
media tensors) out. The pipeline validates, labels, applies the overflow and
unlabeled policies, pads, shifts and reports.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch

from . import engine
from .batch import (
    as_tensor,
    pad_columns,
    padded_length,
    shift_for_next_token,
    token_axis_keys,
    trim_columns,
)
from .conversation import assistant_turns, conversations_of
from .engine import IGNORE_INDEX, as_int64
from .errors import CollateError, OptionError, SampleError, SampleTooLongError
from .labels import label_array
from .report import Batch, BatchReport
from .tokens import media_token_ids, pad_token_id, tokenizer_of

logger = logging.getLogger("vlm_collate")

Encoder = Callable[[list[Any], list[list[dict[str, Any]]], list[int]], dict[str, Any]]
"""(examples, their conversations, their indices in the input batch) -> encoded batch."""
Labeler = Callable[[dict[str, Any], list[list[dict[str, Any]]]], np.ndarray]
OnOverflow = Literal["error", "drop", "truncate"]
OnUnlabeled = Literal["warn", "raise", "drop"]


@dataclass(frozen=True)
class CollateOptions:
    """Options every collate function accepts.

    ``max_length``: longest sample allowed; with ``pad_to_max_length`` every batch
    is padded to exactly this length (pipeline parallelism). ``on_overflow``:
    what an over-long sample gets (``"error"``, ``"drop"``, or ``"truncate"``,
    which cuts text only: a sample whose media reach past ``max_length`` is
    dropped). ``on_unlabeled``: a sample without an assistant turn is
    ``"warn"``-ed (kept, all -100), ``"raise"``-d or ``"drop"``-ped.
    """

    max_length: int | None = None
    pad_to_max_length: bool = False
    pad_to_multiple_of: int | None = None
    shift: bool = True
    on_overflow: OnOverflow = "error"
    on_unlabeled: OnUnlabeled = "warn"

    def __post_init__(self) -> None:
        if self.on_overflow not in ("error", "drop", "truncate"):
            raise OptionError(
                f"on_overflow must be 'error', 'drop' or 'truncate', got {self.on_overflow!r}"
            )
        if self.on_unlabeled not in ("warn", "raise", "drop"):
            raise OptionError(
                f"on_unlabeled must be 'warn', 'raise' or 'drop', got {self.on_unlabeled!r}"
            )
        if self.max_length is not None and self.max_length < 2:
            raise OptionError(f"max_length must be at least 2, got {self.max_length}")
        if self.pad_to_max_length and self.max_length is None:
            raise OptionError("pad_to_max_length needs max_length")


def default_labeler(processor: Any) -> Labeler:
    """Labels from the chat template's markers (or the content search)."""

    def label(encoded: dict[str, Any], conversations: list[list[dict[str, Any]]]) -> np.ndarray:
        labels, _ = label_array(
            encoded["input_ids"], conversations, processor, encoded.get("attention_mask")
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
) -> tuple[list[int], bool]:
    """Indices (into ``keep``) of samples that stay, and whether to truncate."""
    limit = options.max_length
    ids, mask = as_int64(encoded["input_ids"]), as_int64(encoded["attention_mask"])
    lengths = (mask != 0).sum(axis=1)
    over = [k for k in range(len(keep)) if lengths[k] > limit]
    if not over:
        return list(range(len(keep))), False
    if options.on_overflow == "error":
        k = over[0]
        raise SampleTooLongError(
            f"sample {keep[k]} has {int(lengths[k])} tokens, more than max_length={limit}; "
            "raise max_length or pass on_overflow='truncate' or 'drop'"
        )
    if options.on_overflow == "drop":
        for k in over:
            report.dropped.append((keep[k], f"{int(lengths[k])} tokens > max_length={limit}"))
        return [k for k in range(len(keep)) if k not in set(over)], False
    values, offsets = engine.unpad(ids, mask)
    fitted = engine.fitted_lengths(values, offsets, limit, media_ids)
    stay = []
    for k in range(len(keep)):
        if fitted[k] < 0:
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
    return stay, True


def collate_with(
    examples: Sequence[Any],
    processor: Any,
    encode: Encoder,
    options: CollateOptions,
    *,
    labeler: Labeler | None = None,
    media_ids: Sequence[int] | None = None,
    extra_token_keys: Sequence[str] = (),
) -> Batch:
    """Runs the shared pipeline on ``examples`` with the family's ``encode``."""
    conversations = conversations_of(examples)
    report = BatchReport(samples=len(conversations))
    labeler = labeler or default_labeler(processor)
    tokenizer = tokenizer_of(processor)
    pad_id = pad_token_id(tokenizer)
    keep = _unlabeled_policy(conversations, options, report)
    if options.max_length is not None and media_ids is None:
        media_ids = media_token_ids(processor)
    truncate = False
    while True:
        if not keep:
            raise CollateError(f"every sample of the batch was dropped: {report.dropped}")
        encoded = dict(
            encode([examples[i] for i in keep], [conversations[i] for i in keep], list(keep))
        )
        if options.max_length is None:
            break
        report.truncated = []
        stay, truncate = _overflow_policy(encoded, keep, options, list(media_ids), report)
        if len(stay) == len(keep):
            break
        keep = [keep[k] for k in stay]
    kept_conversations = [conversations[i] for i in keep]
    labels = labeler(encoded, kept_conversations)
    batch = {k: as_tensor(v) for k, v in encoded.items()}
    batch["labels"] = torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))
    keys = token_axis_keys(batch, extra_token_keys)
    if truncate:
        trim_columns(batch, options.max_length, keys)
    longest = int(batch["input_ids"].shape[-1])
    target = padded_length(
        longest,
        options.max_length if options.pad_to_max_length else None,
        options.pad_to_multiple_of,
    )
    if target > longest:
        pad_columns(batch, target, pad_id, keys)
    targets_per_row = (batch["labels"] != IGNORE_INDEX).sum(dim=-1).tolist()
    report.target_tokens = int(sum(targets_per_row))
    report.unlabeled = [keep[k] for k, n in enumerate(targets_per_row) if n == 0]
    if report.unlabeled and options.on_unlabeled != "drop":
        logger.warning("samples %s have no target tokens", report.unlabeled)
    if options.shift:
        shift_for_next_token(batch, keys)
    logger.debug(report.summary())
    return Batch(batch, report=report)
