"""Which tokens a batch trains on, and how much: the stop token a template does not write,
and the loss policies.

**Every reply closed.** A template with no closing token of its own (GLM-4.x / GLM-4.1V,
LLaVA 1.5: no reply is followed by a special token) labels the next turn's opening special
token after a reply that another turn follows (GLM's ``<|user|>``, one of its stop
tokens), and after the last reply nothing. With ``close_last_reply="auto"`` the pipeline
appends the model's stop token (the tokenizer's eos, or the id ``close_last_reply``
names) to each row whose conversation ends with a trained assistant reply, and labels it:
the only token of a batch the template did not render. It is appended to the encoded
row (no tokenizer merge can swallow it), before ``max_length`` is applied, so truncation,
packing and :class:`~vlm_collate.LengthEstimator` count it.

**Loss policies.** ``train_on``: ``"assistant"`` (every reply), ``"last"`` (the last
reply only), ``"all"`` (every attended token but media placeholders) or a list of roles;
a message's ``"train": True/False`` overrides its role; a message's ``"weight": float``
scales its targets' loss, returned as ``loss_weights`` (0 where a label is ignored, only
when some message carries a weight; pop it before ``model(**batch)``, see
:func:`weighted_loss`). Every policy labels by the same contract as the default: reply k
of the marker scan is assistant message k when the scan found every reply, else (and for
roles other than assistant) each chosen message's span by differential rendering.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ..engine import IGNORE_INDEX, as_int64
from ..errors import CollateError
from ..processor.closing import ReplyClosing, closing_ids, reply_closing
from ..processor.profile import ProcessorProfile, profile_of
from ..processor.render import (
    RenderedConversation,
    bounded_turns_end,
    content_span,
    renderer_for,
    token_targets,
)

LOSS_WEIGHTS = "loss_weights"

__all__ = [
    "LOSS_WEIGHTS",
    "ReplyClosing",
    "append_stop_tokens",
    "label_policies",
    "reply_closing",
    "weighted_loss",
]


# --------------------------------------------------------------------------- closing


def _stop_id(profile: ProcessorProfile, option: str | int) -> int | None:
    """The stop token to append, or None (``"never"``, or a template that closes)."""
    if option == "never":
        return None
    closing = reply_closing(profile)
    if closing.closes:
        return None
    if isinstance(option, int):
        return option
    if closing.stop_id is None:
        raise CollateError(
            "the chat template writes no closing token after a reply and the tokenizer has "
            "no eos_token: pass close_last_reply=<the model's stop token id> (or a generation "
            "config), or close_last_reply='never' to train on the rendered text only"
        )
    return int(closing.stop_id)


# --------------------------------------------------------------------------- message policy


def _message_fields(conversation: Sequence[Mapping[str, Any]], sample: int) -> None:
    for turn, message in enumerate(conversation):
        train = message.get("train")
        if train is not None and not isinstance(train, (bool, np.bool_)):
            raise CollateError(
                f"sample {sample}, message {turn}: 'train' must be True or False, got {train!r}"
            )
        weight = message.get("weight")
        if weight is not None and (
            isinstance(weight, bool)
            or not isinstance(weight, (int, float, np.integer, np.floating))
            or not math.isfinite(float(weight))
            or float(weight) < 0
        ):
            raise CollateError(
                f"sample {sample}, message {turn}: 'weight' must be a finite number >= 0, "
                f"got {weight!r}"
            )


def _chosen(conversation: Sequence[Mapping[str, Any]], train_on: Any) -> list[bool]:
    """Per message: is it trained (its role under ``train_on``, then its own ``train``,
    and a weight of 0 means not trained)."""
    last = max((k for k, m in enumerate(conversation) if m.get("role") == "assistant"), default=-1)
    out = []
    for k, m in enumerate(conversation):
        role = m.get("role")
        if train_on == "assistant":
            chosen = role == "assistant"
        elif train_on == "last":
            chosen = k == last
        elif train_on == "all":
            chosen = True
        else:
            chosen = role in train_on
        if m.get("train") is not None:
            chosen = bool(m["train"])
        if m.get("weight") is not None and float(m["weight"]) == 0:
            chosen = False
        out.append(chosen)
    return out


def _is_default(conversations: Sequence[Sequence[Mapping[str, Any]]], train_on: Any) -> bool:
    return train_on == "assistant" and not any(
        m.get("train") is not None or m.get("weight") is not None for c in conversations for m in c
    )


def _weight(message: Mapping[str, Any]) -> float:
    w = message.get("weight")
    return 1.0 if w is None else float(w)


# --------------------------------------------------------------------------- appending the stop


def append_stop_tokens(
    encoded: dict[str, Any],
    conversations: Sequence[Sequence[Mapping[str, Any]]],
    profile: ProcessorProfile,
    options: Any,
    token_keys: Sequence[str],
) -> np.ndarray:
    """Appends the stop token to each row whose conversation ends with a trained assistant
    reply, when the template writes no closing token (``options.close_last_reply``);
    widens the token-axis tensors ``token_keys`` (``input_ids`` gets the pad id, the rest
    0) by a column when a row needs one. Returns each row's appended position (-1: none)."""
    rows = len(conversations)
    positions = np.full(rows, -1, dtype=np.int64)
    stop = _stop_id(profile, options.close_last_reply)
    if stop is None:
        return positions
    wanted = [
        bool(c) and c[-1].get("role") == "assistant" and _chosen(c, options.train_on)[-1]
        for c in conversations
    ]
    if not any(wanted):
        return positions
    mask = as_int64(encoded["attention_mask"])
    lengths = (mask.reshape(rows, -1) != 0).sum(axis=1)
    width = int(encoded["input_ids"].shape[-1])
    grow = any(w and int(n) >= width for w, n in zip(wanted, lengths))
    axes = profile.token_axes
    for key in token_keys:
        value = encoded.get(key)
        if value is None:
            continue
        tensor = torch.as_tensor(value)
        axis = axes.get(key, tensor.ndim - 1) % max(tensor.ndim, 1)
        moved = tensor.movedim(axis, -1)
        if grow:
            fill = profile.require_pad_id() if key == "input_ids" else 0
            extra = torch.full((*moved.shape[:-1], 1), fill, dtype=moved.dtype)
            moved = torch.cat([moved, extra], dim=-1)
        else:
            moved = moved.clone()
        for r in range(rows):
            if wanted[r]:
                at = int(lengths[r])
                value_at = stop if key == "input_ids" else (1 if key == "attention_mask" else 0)
                moved[r, ..., at] = value_at
        out = moved.movedim(-1, axis).contiguous()
        encoded[key] = out.numpy() if isinstance(value, np.ndarray) else out
    for r in range(rows):
        if wanted[r]:
            positions[r] = int(lengths[r])
    return positions


def appended_stop(
    profile: ProcessorProfile,
    conversation: Sequence[Mapping[str, Any]],
    close_last_reply: Any = "auto",
    train_on: Any = "assistant",
) -> int:
    """1 when the pipeline appends a stop token to ``conversation``'s row, else 0 (for
    :class:`~vlm_collate.LengthEstimator`)."""
    if not conversation or conversation[-1].get("role") != "assistant":
        return 0
    if not _chosen(conversation, train_on)[-1]:
        return 0
    try:
        stop = _stop_id(profile_of(profile), close_last_reply)
    except CollateError:
        return 0
    return int(stop is not None)


def hidden_stops(encoded: Mapping[str, Any], positions: np.ndarray) -> dict[str, Any]:
    """``encoded`` with the appended stop tokens masked out: what the template rendered,
    for the labeller."""
    if not (positions >= 0).any():
        return dict(encoded)
    mask = torch.as_tensor(encoded["attention_mask"]).clone()
    for r in np.flatnonzero(positions >= 0).tolist():
        mask[r, ..., int(positions[r])] = 0
    return {**encoded, "attention_mask": mask}


# --------------------------------------------------------------------------- labelling


def _runs(row_labels: np.ndarray, row_ids: np.ndarray, media: np.ndarray) -> list[np.ndarray]:
    """Target positions of one row grouped into replies: maximal runs of targets, a gap
    made only of media placeholders bridged (media inside a reply)."""
    targets = np.flatnonzero(row_labels != IGNORE_INDEX)
    if len(targets) == 0:
        return []
    cuts = []
    for i in range(1, len(targets)):
        a, b = targets[i - 1], targets[i]
        if b - a > 1 and not np.isin(row_ids[a + 1 : b], media).all():
            cuts.append(i)
    return np.split(targets, cuts)


def _exact_message_targets(
    row_ids: np.ndarray,
    row_mask: np.ndarray,
    conversation: Sequence[Mapping[str, Any]],
    chosen: Sequence[int],
    profile: ProcessorProfile,
    reasoning: str,
    template_kwargs: Mapping[str, Any] | None,
) -> list[np.ndarray]:
    """Per chosen message, the row positions of its targets by differential rendering:
    its content span and the end-of-turn closing it (media placeholders never)."""
    from .labels import aligned_positions

    render = renderer_for(profile, template_kwargs)
    messages = [dict(m) for m in conversation]
    full = render(messages)
    spans = [content_span(render, messages, k, full, reasoning) for k in chosen]  # type: ignore[arg-type]
    kept = [s for s in spans if s is not None]
    rendered = RenderedConversation(full, spans, bounded_turns_end(render, messages, full, kept))
    media = np.array(profile.media_ids, dtype=np.int64)
    truth = token_targets(
        profile.tokenizer,
        rendered,
        profile.special_ids,
        frozenset(media.tolist()),
        closing_ids(profile),
    )
    positions = np.flatnonzero(row_mask)
    tokens = np.asarray(truth.ids, dtype=np.int64)
    at = aligned_positions(row_ids[positions], tokens, media)
    targets = np.asarray(truth.targets, dtype=bool)
    out = []
    for turn in truth.turns:
        if turn is None:
            out.append(np.zeros(0, dtype=np.int64))
            continue
        idx = np.arange(turn[0], turn[1])
        idx = idx[targets[idx] & (at[idx] >= 0)]
        out.append(positions[at[idx]])
    return out


def label_policies(
    labels: np.ndarray,
    encoded: Mapping[str, Any],
    conversations: Sequence[Sequence[Mapping[str, Any]]],
    profile: ProcessorProfile,
    options: Any,
    stops: np.ndarray,
    template_kwargs: Mapping[str, Any] | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """The labels under ``options.train_on`` and the messages' ``train``/``weight``, with
    each appended stop token (``stops``) labelled as part of the last reply; and the
    per-token loss weights (None unless some message carries a ``weight``). ``labels``:
    the default labels (every assistant reply) of the rows without the appended tokens;
    ``encoded``: the batch with them."""
    ids = as_int64(encoded["input_ids"])
    mask = as_int64(encoded["attention_mask"]).reshape(ids.shape[0], -1)[:, : ids.shape[1]]
    hidden = mask.copy()
    for r in np.flatnonzero(stops >= 0).tolist():
        hidden[r, stops[r]] = 0
    for i, c in enumerate(conversations):
        _message_fields(c, i)
    train_on = options.train_on
    weighted = any(m.get("weight") is not None for c in conversations for m in c)
    weights = np.zeros(ids.shape, dtype=np.float32) if weighted else None
    media = np.array(profile.media_ids, dtype=np.int64)
    if _is_default(conversations, train_on):
        out = labels.copy()
    else:
        out = np.full(ids.shape, IGNORE_INDEX, dtype=np.int64)
        for r, conversation in enumerate(conversations):
            _label_row(r, out, weights, labels, ids, hidden, conversation, profile, options,
                       media, template_kwargs)  # fmt: skip
    for r in np.flatnonzero(stops >= 0).tolist():
        at = int(stops[r])
        out[r, at] = ids[r, at]
        earlier = np.flatnonzero(out[r, :at] != IGNORE_INDEX)
        tail = np.arange(earlier[-1] + 1 if len(earlier) else at, at)
        text = profile.tokenizer.decode(ids[r, tail].tolist()) if len(tail) else ""
        if len(tail) and not text.strip() and not np.isin(ids[r, tail], media).any():
            out[r, tail] = ids[r, tail]  # the template's whitespace after the reply
        else:
            tail = tail[:0]
        if weights is not None:
            w = _weight(conversations[r][-1])
            weights[r, at] = w
            weights[r, tail] = w
    if weights is not None:
        weights[out == IGNORE_INDEX] = 0.0
    return out, weights


def _assistant_positions(
    r: int,
    labels: np.ndarray,
    ids: np.ndarray,
    hidden: np.ndarray,
    conversation: Sequence[Mapping[str, Any]],
    profile: ProcessorProfile,
    options: Any,
    media: np.ndarray,
    template_kwargs: Mapping[str, Any] | None,
) -> tuple[list[int], list[np.ndarray]]:
    """(assistant message indices, each one's target positions): from the default labels'
    runs when there is one run per assistant message, else by differential rendering."""
    replies = [k for k, m in enumerate(conversation) if m.get("role") == "assistant"]
    runs = _runs(labels[r], ids[r], media)
    if len(runs) == len(replies):
        return replies, runs
    return replies, _exact_message_targets(
        ids[r], hidden[r], conversation, replies, profile, options.reasoning, template_kwargs
    )


def _label_row(
    r: int,
    out: np.ndarray,
    weights: np.ndarray | None,
    labels: np.ndarray,
    ids: np.ndarray,
    hidden: np.ndarray,
    conversation: Sequence[Mapping[str, Any]],
    profile: ProcessorProfile,
    options: Any,
    media: np.ndarray,
    template_kwargs: Mapping[str, Any] | None,
) -> None:
    chosen = _chosen(conversation, options.train_on)
    if options.train_on == "all":
        keep = (hidden[r] != 0) & ~np.isin(ids[r], media)
        out[r, keep] = ids[r, keep]
        if weights is not None:
            weights[r, keep] = 1.0
        special = [
            k for k, m in enumerate(conversation) if not chosen[k] or m.get("weight") is not None
        ]
        if special:
            found = _exact_message_targets(
                ids[r], hidden[r], conversation, special, profile, options.reasoning,
                template_kwargs,
            )  # fmt: skip
            for k, positions in zip(special, found):
                if not chosen[k]:
                    out[r, positions] = IGNORE_INDEX
                elif weights is not None:
                    weights[r, positions] = _weight(conversation[k])
        return
    if all(conversation[k].get("role") == "assistant" for k, c in enumerate(chosen) if c):
        replies, found = _assistant_positions(
            r, labels, ids, hidden, conversation, profile, options, media, template_kwargs
        )
    else:
        replies = [k for k, c in enumerate(chosen) if c]
        found = _exact_message_targets(
            ids[r], hidden[r], conversation, replies, profile, options.reasoning, template_kwargs
        )
    for k, positions in zip(replies, found):
        if chosen[k]:
            out[r, positions] = ids[r, positions]
            if weights is not None:
                weights[r, positions] = _weight(conversation[k])


# --------------------------------------------------------------------------- the loss


def weighted_loss(
    logits: torch.Tensor,
    batch: Mapping[str, Any],
    num_items_in_batch: int | torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy of ``logits`` ``(B, L, V)`` on ``batch["labels"]``, each target's
    loss scaled by ``batch["loss_weights"]``: ``sum(weight * loss) / targets``, where
    ``targets`` is the number of labelled tokens (or ``num_items_in_batch``, as the
    Hugging Face Trainer passes under gradient accumulation). Without ``loss_weights``
    every weight is 1 (the model's own loss). A batch with ``shift_labels`` (the
    seed-named functions' pre-shifted layout) is aligned already; otherwise position i
    predicts label i + 1, as transformers' causal-LM loss shifts."""
    labels = torch.as_tensor(batch.get("shift_labels", batch["labels"])).to(logits.device)
    labels = labels.masked_fill(labels < 0, IGNORE_INDEX)  # any label_pad_token_id
    weights = batch.get(LOSS_WEIGHTS)
    weights = (
        torch.ones(labels.shape, dtype=torch.float32, device=logits.device)
        if weights is None
        else torch.as_tensor(weights).to(logits.device, torch.float32)
    )
    if "shift_labels" not in batch:
        logits, labels, weights = logits[:, :-1], labels[:, 1:], weights[:, 1:]
    losses = torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction="none",
    )
    valid = labels.reshape(-1) != IGNORE_INDEX
    total = (losses * weights.reshape(-1) * valid).sum()
    count = valid.sum() if num_items_in_batch is None else num_items_in_batch
    count = torch.as_tensor(count, device=total.device).clamp(min=1)
    return total / count
