"""Labels of a batch: -100 everywhere except on the assistant's replies."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from . import engine
from .conversation import assistant_turns, extract_assistant_text
from .engine import as_int64, ragged
from .errors import CollateError
from .markers import markers_for
from .tokens import media_token_ids, tokenizer_of

logger = logging.getLogger("vlm_collate")


def _mask_for(input_ids: np.ndarray, attention_mask: Any, tokenizer: Any) -> np.ndarray:
    if attention_mask is not None:
        return as_int64(attention_mask)
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        return np.ones_like(input_ids)
    return (input_ids != pad).astype(np.int64)


def labels_by_contents(
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    conversations: Sequence[Sequence[dict[str, Any]]],
    processor: Any,
    headers: Sequence[Sequence[int]] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Labels found by searching each reply's own tokens in order, after the next
    assistant header when headers are known (the fallback for templates without
    derivable markers). Returns (labels, replies located)."""
    tokenizer = tokenizer_of(processor)
    replies = [
        tokenizer(extract_assistant_text(m), add_special_tokens=False)["input_ids"]
        for conversation in conversations
        for m in assistant_turns(conversation)
    ]
    per_row = np.array([len(assistant_turns(c)) for c in conversations], dtype=np.int64)
    values, offsets = ragged(replies)
    stop_ids = [t for t in (tokenizer.eos_token_id, tokenizer.pad_token_id) if t is not None]
    return engine.labels_from_contents(
        input_ids,
        attention_mask,
        values,
        offsets,
        per_row,
        stop_ids,
        [list(h) for h in headers],
        media_token_ids(processor),
    )


def label_array(
    input_ids: Any,
    conversations: Sequence[Sequence[dict[str, Any]]],
    processor: Any,
    attention_mask: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, replies found per row)`` as int64 arrays for a padded batch."""
    ids = as_int64(input_ids)
    if ids.ndim != 2 or ids.shape[0] != len(conversations):
        raise CollateError(
            f"input_ids has shape {tuple(ids.shape)} but there are {len(conversations)} "
            "conversations; pass a (batch, length) array with one row per conversation"
        )
    tokenizer = tokenizer_of(processor)
    mask = _mask_for(ids, attention_mask, tokenizer)
    markers = markers_for(processor)
    if markers is None:
        labels, found = labels_by_contents(ids, mask, conversations, processor)
    elif not markers.ends:
        labels, found = labels_by_contents(ids, mask, conversations, processor, markers.starts)
    else:
        labels, found = engine.labels_from_markers(
            ids, mask, markers.starts, markers.ends, markers.ignore_ids
        )
    _warn_missing_replies(found, conversations)
    return labels, found


def _warn_missing_replies(found: np.ndarray, conversations: Sequence[Sequence[dict]]) -> None:
    """Says which samples have fewer located replies than assistant turns."""
    for i, (n, conversation) in enumerate(zip(found.tolist(), conversations)):
        expected = len(assistant_turns(conversation))
        if n < expected:
            logger.warning(
                "sample %d: %d of its %d assistant replies were located in input_ids "
                "(cut by the processor or not rendered); the rest are not labelled",
                i,
                n,
                expected,
            )


def build_labels(
    input_ids_batch: Any,
    conversations: Sequence[Sequence[dict[str, Any]]],
    processor: Any,
    attention_mask: Any = None,
) -> torch.Tensor:
    """Labels (B, L) for a padded batch of rendered conversations: the tokens of
    every assistant reply and the end-of-turn token closing it; -100 elsewhere.

    Markers come from the processor's chat template (derived once, cached); a
    template without them falls back to searching each reply's tokens.
    """
    labels, _ = label_array(input_ids_batch, conversations, processor, attention_mask)
    return torch.from_numpy(labels)
