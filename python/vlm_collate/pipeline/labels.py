"""Labels of a batch: -100 everywhere except on the assistant's replies.

Two paths, one contract (:mod:`vlm_collate.processor.render`): a template whose
markers were verified (:mod:`vlm_collate.processor.markers`) is labelled by the engine's
marker scan; any other template, and any conversation whose reasoning must be excluded,
by differential rendering of that conversation, mapped onto its ``input_ids`` row
(media runs skipped).
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from .. import engine
from ..engine import IGNORE_INDEX, as_int64, ragged
from ..errors import CollateError, OptionError
from ..formats.conversation import assistant_turns, extract_assistant_text
from ..processor.closing import closing_ids
from ..processor.markers import labels_plan
from ..processor.profile import ProcessorProfile, profile_of
from ..processor.render import (
    REASONING_MODES,
    Reasoning,
    reasoning_of,
    rendered_replies,
    renderer_for,
    token_targets,
)

logger = logging.getLogger("vlm_collate")


def _mask_for(
    input_ids: np.ndarray,
    attention_mask: Any,
    profile: ProcessorProfile,
    keep_first_pad: bool = False,
) -> np.ndarray:
    """The attention mask, or without one: every token except the run of pad ids at the
    padded end of each row (pad ids inside a row, as when pad is eos, are real tokens).
    With ``keep_first_pad`` (pad id closes turns) the run's first token is the row's own."""
    if attention_mask is not None:
        return as_int64(attention_mask)
    pad = profile.pad_id
    mask = np.ones_like(input_ids)
    if pad is None or input_ids.size == 0:
        return mask
    left = getattr(profile.tokenizer, "padding_side", "right") == "left"
    rows = input_ids[:, ::-1] if not left else input_ids
    is_pad = rows == pad
    run = np.cumprod(is_pad, axis=1).sum(axis=1)  # length of the pad run at the padded end
    if keep_first_pad:
        run = np.maximum(run - 1, 0)
    width = input_ids.shape[1]
    cols = np.arange(width)
    padded = cols[None, :] < run[:, None] if left else cols[None, :] >= (width - run)[:, None]
    mask[padded] = 0
    return mask


# --------------------------------------------------------------------------- the exact path


def _collapsed(tokens: np.ndarray, media: np.ndarray) -> np.ndarray:
    """Indices of ``tokens`` with each run of one repeated media id kept once."""
    repeat = np.zeros(len(tokens), dtype=bool)
    if len(tokens) > 1:
        repeat[1:] = np.isin(tokens[1:], media) & (tokens[1:] == tokens[:-1])
    return np.flatnonzero(~repeat)


def aligned_positions(row: np.ndarray, tokens: np.ndarray, media: np.ndarray) -> np.ndarray:
    """For each token of the text-only tokenization ``tokens``, its index in ``row`` (a
    processor's row, where media placeholders may be expanded into runs and special
    tokens added), or -1 where it has no counterpart."""
    at = np.full(len(tokens), -1, dtype=np.int64)
    keep_row, keep_tok = _collapsed(row, media), _collapsed(tokens, media)
    row_c, tok_c = row[keep_row], tokens[keep_tok]
    extra = len(row_c) - len(tok_c)
    if extra >= 0 and np.array_equal(row_c[extra:], tok_c):
        at[keep_tok] = keep_row[extra:]
        return at
    matcher = difflib.SequenceMatcher(None, row_c.tolist(), tok_c.tolist(), autojunk=False)
    for a, b, n in matcher.get_matching_blocks():
        at[keep_tok[b : b + n]] = keep_row[a : a + n]
    return at


def exact_labels(
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    conversations: Sequence[Sequence[dict[str, Any]]],
    profile: ProcessorProfile,
    rows: Sequence[int] | None = None,
    reasoning: Reasoning = "label",
    template_kwargs: Mapping[str, Any] | None = None,
    labels: np.ndarray | None = None,
    found: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Labels of ``rows`` (default: all) by differential rendering of each conversation,
    mapped onto its attended ``input_ids``; writes into ``labels``/``found`` when given.
    ``profile``: the processor's profile (or the processor)."""
    profile = profile_of(profile)
    render = renderer_for(profile, template_kwargs)
    media, never = np.array(profile.media_ids, dtype=np.int64), frozenset(profile.media_ids)
    closing = closing_ids(profile)
    if labels is None:
        labels = np.full(input_ids.shape, IGNORE_INDEX, dtype=np.int64)
    if found is None:
        found = np.zeros(input_ids.shape[0], dtype=np.int64)
    for r in range(input_ids.shape[0]) if rows is None else rows:
        positions = np.flatnonzero(attention_mask[r])
        truth = token_targets(
            profile.tokenizer,
            rendered_replies(render, conversations[r], reasoning),
            profile.special_ids,
            never,
            closing,
        )
        tokens = np.asarray(truth.ids, dtype=np.int64)
        at = aligned_positions(input_ids[r, positions], tokens, media)
        labels[r] = IGNORE_INDEX
        targets = np.asarray(truth.targets, dtype=bool)
        chosen = np.flatnonzero(targets & (at >= 0))
        labels[r, positions[at[chosen]]] = tokens[chosen]
        astray = _astray_targets(targets, at)
        found[r] = sum(
            1
            for turn in truth.turns
            if turn is not None
            and (turn[0] == turn[1] or (at[turn[0] : turn[1]] >= 0).any())
            and not astray[turn[0] : turn[1]].any()
        )
        if astray.any():
            logger.warning(
                "sample %d: %d reply tokens of the template's rendering of its conversation "
                "are not in its input_ids, which were rendered differently (a template that "
                "prints list content as a Python literal, as GLM-4.1V's does for assistant "
                "turns, was given list content?); render the conversation in the forms "
                "check_template reports (or with vlm_collate's collators). Those replies are "
                "not labelled",
                r,
                int(astray.sum()),
            )
    return labels, found


def _astray_targets(targets: np.ndarray, at: np.ndarray) -> np.ndarray:
    """Targets of the rendering with no counterpart in the row, between the first and the
    last token that has one (tokens a truncation cut are at the ends, not between)."""
    aligned = np.flatnonzero(at >= 0)
    astray = np.zeros(len(targets), dtype=bool)
    if len(aligned):
        inner = slice(int(aligned[0]), int(aligned[-1]) + 1)
        astray[inner] = targets[inner] & (at[inner] < 0)
    return astray


# --------------------------------------------------------------------------- the content search


def labels_by_contents(
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    conversations: Sequence[Sequence[dict[str, Any]]],
    processor: Any,
    headers: Sequence[Sequence[int]] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Labels found by searching each reply's own tokens in order, after the next
    assistant header when headers are known: the seed's approach, kept for the
    benchmarks (it is not exact on every template). Returns (labels, replies located)."""
    profile = profile_of(processor)
    tokenizer = profile.tokenizer
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
        list(profile.media_ids),
    )


def expected_replies(conversations: Sequence[Sequence[dict[str, Any]]]) -> np.ndarray:
    """Per conversation, its number of assistant messages (int64)."""
    return np.array(
        [[m.get("role") for m in c].count("assistant") for c in conversations], dtype=np.int64
    )


def unchecked_rows(headers: np.ndarray, found: np.ndarray, expected: np.ndarray) -> list[int]:
    """Rows whose marker labels cannot be trusted: the attended positions where an
    assistant header begins (``headers``, counted by the engine's marker scan wherever
    they are) or the replies found differ from the number of assistant messages."""
    return np.flatnonzero((headers != expected) | (found != expected)).tolist()


def _has_reasoning(conversation: Sequence[dict[str, Any]]) -> bool:
    return any(reasoning_of(m) for m in assistant_turns(conversation))


def label_array(
    input_ids: Any,
    conversations: Sequence[Sequence[dict[str, Any]]],
    profile: ProcessorProfile,
    attention_mask: Any = None,
    *,
    reasoning: Reasoning = "label",
    template_kwargs: Mapping[str, Any] | None = None,
    exact_rows: list[int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """``(labels, replies found per row)`` as int64 arrays for a padded batch.

    On the marker path every row is checked without rendering: it must hold one header
    per assistant message and the engine must find as many replies (user text that reads
    like a header, a turn the template drops, a row cut short all fail it); a row that
    fails is labelled by the exact path and its index appended to ``exact_rows``.

    ``reasoning``: reasoning text an assistant message supplies (a ``reasoning_content``
    field, or ``<think>...</think>`` in its content) that the template renders is a
    target (``"label"``) or not (``"exclude"``); scaffolding the template inserts never
    is. ``template_kwargs`` are the keywords the batch was rendered with. ``profile``:
    the processor's profile (or the processor)."""
    profile = profile_of(profile)
    if reasoning not in REASONING_MODES:
        raise OptionError(f"reasoning must be 'label' or 'exclude', got {reasoning!r}")
    ids = as_int64(input_ids)
    if ids.ndim != 2 or ids.shape[0] != len(conversations):
        raise CollateError(
            f"input_ids has shape {tuple(ids.shape)} but there are {len(conversations)} "
            "conversations; pass a (batch, length) array with one row per conversation"
        )
    plan = labels_plan(profile)
    markers = plan.markers if plan.method == "markers" else None
    closes = False
    if attention_mask is None:
        pad = profile.pad_id
        closes = pad is not None and (
            pad == getattr(profile.tokenizer, "eos_token_id", None)
            or (markers is not None and pad in markers.stop_ids)
        )
    mask = _mask_for(ids, attention_mask, profile, keep_first_pad=closes)
    expected = expected_replies(conversations)
    if markers is None:
        labels, found = exact_labels(
            ids, mask, conversations, profile, None, reasoning, template_kwargs
        )
    else:
        labels, found, headers = engine.labels_from_markers(
            ids, mask, markers.starts, markers.ends, markers.ignore_ids, count_headers=True
        )
        rows = unchecked_rows(headers, found, expected)
        if rows:
            logger.info(
                "labels: rows %s do not hold one assistant header per assistant message; "
                "labelled by differential rendering (exact path)",
                rows,
            )
            if exact_rows is not None:
                exact_rows.extend(rows)
        if reasoning == "exclude":
            rows = sorted({*rows, *(i for i, c in enumerate(conversations) if _has_reasoning(c))})
        if rows:
            exact_labels(
                ids,
                mask,
                conversations,
                profile,
                rows,
                reasoning,
                template_kwargs,
                labels,
                found,
            )
    _warn_missing_replies(found, expected)
    return labels, found


def _warn_missing_replies(found: np.ndarray, expected: np.ndarray) -> None:
    """Says which samples have fewer located replies than assistant turns."""
    for i in np.flatnonzero(found < expected).tolist():
        logger.warning(
            "sample %d: %d of its %d assistant replies were located in input_ids "
            "(cut by the processor or not rendered); the rest are not labelled",
            i,
            int(found[i]),
            int(expected[i]),
        )


def build_labels(
    input_ids_batch: Any,
    conversations: Sequence[Sequence[dict[str, Any]]],
    processor: Any,
    attention_mask: Any = None,
    *,
    reasoning: Reasoning = "label",
) -> torch.Tensor:
    """Labels (B, L) for a padded batch of rendered conversations: the tokens of
    every assistant reply as the template rendered it and the end-of-turn closing it;
    -100 elsewhere.

    Markers derived from the processor's chat template and verified against
    differential rendering label the batch; a template whose markers fail verification
    is labelled by differential rendering of each conversation (see :func:`label_array`).
    """
    labels, _ = label_array(
        input_ids_batch, conversations, profile_of(processor), attention_mask, reasoning=reasoning
    )
    return torch.from_numpy(labels)
