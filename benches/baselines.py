"""The baselines vlm_collate is measured against, written for these benchmarks.

* seed-style: what the seed's collate functions do (tokenize each reply, then
  compare a torch window at every position in a Python loop; decode the next
  token to decide whether it ends the turn; shift every tensor whose shape
  equals ``input_ids``'s; expand placeholders sample by sample with
  ``torch.cat``);
* vectorised torch: the fastest whole-tensor formulation we could write, with
  the same results as the engine on the benchmark data.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from vlm_collate.formats.conversation import assistant_turns, extract_assistant_text

IGNORE = -100


# --------------------------------------------------------------------------- seed-style


def _stop_strings(tokenizer: Any) -> set[str]:
    names = {"<|im_end|>", "<|endoftext|>", "<end_of_turn>", "</s>", "<|eot_id|>"}
    names |= {t for t in (tokenizer.eos_token, tokenizer.pad_token) if t}
    return names


def seed_style_find(row: torch.Tensor, pattern: torch.Tensor, start: int) -> tuple[int, int]:
    """First window equal to ``pattern`` at or after ``start``, one position at a time."""
    width = len(pattern)
    for i in range(start, len(row) - width + 1):
        if bool((row[i : i + width] == pattern).all()):
            return i, i + width
    return -1, -1


def seed_style_labels(
    input_ids: torch.Tensor, conversations: Sequence[Sequence[dict]], processor: Any
) -> torch.Tensor:
    """Labels by tokenizing every reply and scanning for it position by position."""
    tokenizer = getattr(processor, "tokenizer", processor)
    stops = _stop_strings(tokenizer)
    rows = []
    for row, conversation in zip(input_ids, conversations):
        labels = torch.full_like(row, IGNORE)
        cursor = 0
        for message in assistant_turns(conversation):
            text = extract_assistant_text(message)
            if not text:
                continue
            reply = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"][0]
            start, end = seed_style_find(row, reply, cursor)
            if start < 0:
                break
            if end < len(row) and tokenizer.decode([int(row[end])]).strip() in stops:
                end += 1
            labels[start:end] = row[start:end]
            cursor = end
        rows.append(labels)
    return torch.stack(rows)


def seed_style_shift(batch: dict[str, Any]) -> dict[str, Any]:
    """``labels[:, 1:]`` and ``[:, :-1]`` on every tensor shaped like ``input_ids``."""
    batch["labels"] = batch["labels"][:, 1:]
    shape = batch["input_ids"].shape
    for key, value in list(batch.items()):
        if key != "labels" and isinstance(value, torch.Tensor) and value.shape == shape:
            batch[key] = value[:, :-1]
    return batch


def _images(conversation: Sequence[dict]) -> list:
    return [
        item["image"]
        for message in conversation
        if isinstance(message["content"], list)
        for item in message["content"]
        if item.get("type") == "image"
    ]


def seed_style_collate(examples: Sequence[dict], processor: Any) -> dict[str, Any]:
    """Processor call, seed-style labels and the shape-based shift."""
    conversations = [example["conversation"] for example in examples]
    texts = [processor.apply_chat_template(c, tokenize=False) for c in conversations]
    images = [image for c in conversations for image in _images(c)]
    batch = processor(
        text=texts, images=images or None, padding=True, padding_side="right", return_tensors="pt"
    )
    batch = dict(batch)
    batch["labels"] = seed_style_labels(batch["input_ids"], conversations, processor)
    return seed_style_shift(batch)


class SeedStyleCollator:
    """``collate_fn`` for a DataLoader around :func:`seed_style_collate`."""

    def __init__(self, processor: Any):
        self.processor = processor

    def __call__(self, examples: list) -> dict[str, Any]:
        return seed_style_collate(examples, self.processor)


def seed_style_expand(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    grids: torch.Tensor,
    placeholder: int,
    pad_id: int,
    merge: tuple[int, int] = (2, 2),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per sample and per placeholder ``torch.cat``, then pad with ``torch.cat`` and stack."""
    mh, mw = merge
    image = 0
    rows, masks = [], []
    for row, mask in zip(input_ids, attention_mask):
        row, mask = row[mask.bool()], mask[mask.bool()]
        pieces, mpieces, last = [], [], 0
        for pos in (row == placeholder).nonzero(as_tuple=True)[0].tolist():
            t, h, w = grids[image].tolist()
            n = t * (h // mh) * (w // mw)
            pieces += [row[last:pos], torch.full((n,), placeholder, dtype=row.dtype)]
            mpieces += [mask[last:pos], torch.ones(n, dtype=mask.dtype)]
            last, image = pos + 1, image + 1
        rows.append(torch.cat([*pieces, row[last:]]))
        masks.append(torch.cat([*mpieces, mask[last:]]))
    if image != len(grids):
        raise ValueError(f"{image} placeholders for {len(grids)} images")
    width = max(len(r) for r in rows)
    ids = [torch.cat([r, torch.full((width - len(r),), pad_id, dtype=r.dtype)]) for r in rows]
    att = [torch.cat([m, torch.zeros(width - len(m), dtype=m.dtype)]) for m in masks]
    return torch.stack(ids), torch.stack(att)


# --------------------------------------------------------------------------- vectorised torch


def _starts_of(ids: torch.Tensor, pattern: Sequence[int]) -> torch.Tensor:
    """(B, L) bool: ``pattern`` begins at each position (shifted comparisons, no copies)."""
    batch, length = ids.shape
    width = len(pattern)
    hit = torch.zeros(batch, length, dtype=torch.bool)
    if width == 0 or width > length:
        return hit
    n = length - width + 1
    window = ids[:, :n] == pattern[0]
    for j in range(1, width):
        window &= ids[:, j : j + n] == pattern[j]
    hit[:, :n] = window
    return hit


def torch_marker_labels(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    starts: Sequence[Sequence[int]],
    ends: Sequence[Sequence[int]],
    ignore_ids: Sequence[int] = (),
) -> torch.Tensor:
    """Labels from assistant-start / end-of-turn markers with whole-batch tensor ops.

    A reply opens after the longest start marker and closes after the end marker;
    a position is inside a reply when the latest opening before it is newer than
    the latest closing (a running maximum of event positions, no Python loop).
    """
    batch, length = input_ids.shape
    positions = torch.arange(length).expand(batch, length)
    attended = attention_mask.bool()
    opened = torch.full((batch, length), -1, dtype=torch.long)
    claimed = torch.zeros(batch, length, dtype=torch.bool)
    for pattern in sorted(starts, key=len, reverse=True):
        hit = _starts_of(input_ids, pattern) & ~claimed
        claimed |= hit
        at = hit.nonzero(as_tuple=True)
        after = at[1] + len(pattern)
        keep = after < length
        opened[at[0][keep], after[keep]] = after[keep]
    closed = torch.where(attended, -1, positions)
    for pattern in ends:
        at = _starts_of(input_ids, pattern).nonzero(as_tuple=True)
        after = at[1] + len(pattern)
        keep = after < length
        closed[at[0][keep], after[keep]] = after[keep]
    inside = opened.cummax(dim=1).values > closed.cummax(dim=1).values
    inside &= attended
    if ignore_ids:
        inside &= ~torch.isin(input_ids, torch.tensor(list(ignore_ids)))
    return torch.where(inside, input_ids, IGNORE)


def torch_find(row: torch.Tensor, pattern: torch.Tensor, start: int, skip_first: bool = False):
    """First window equal to ``pattern`` (or to all but its first token) at or after
    ``start``: candidates from one token comparison, then one gathered comparison."""
    width = len(pattern)
    if width == 0 or start + width > len(row):
        return -1, -1
    windows = row[start:].unfold(0, width, 1)
    k = 1 if skip_first and width > 1 else 0
    candidates = (windows[:, k] == pattern[k]).nonzero(as_tuple=True)[0]
    if len(candidates) == 0:
        return -1, -1
    equal = (windows[candidates, k:] == pattern[k:]).all(dim=1).nonzero(as_tuple=True)[0]
    if len(equal) == 0:
        return -1, -1
    s = start + int(candidates[equal[0]])
    return s, s + width


def torch_content_labels(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    replies: Sequence[Sequence[torch.Tensor]],
    stop_ids: Sequence[int],
) -> torch.Tensor:
    """Labels by finding each (pre-tokenized) reply in order with :func:`torch_find`."""
    labels = torch.full_like(input_ids, IGNORE)
    stops = torch.tensor(list(stop_ids))
    for b, (row, row_replies) in enumerate(zip(input_ids, replies)):
        cursor, length = 0, int(attention_mask[b].sum())
        row = row[:length]
        for reply in row_replies:
            start, end = torch_find(row, reply, cursor)
            if start < 0 and len(reply) >= 2:
                start, end = torch_find(row, reply, cursor, skip_first=True)
            if start < 0:
                break
            if end < length and bool(torch.isin(row[end], stops)):
                end += 1
            labels[b, start:end] = row[start:end]
            cursor = end
    return labels


def torch_expand(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    grids: torch.Tensor,
    placeholder: int,
    pad_id: int,
    merge: tuple[int, int] = (2, 2),
) -> tuple[torch.Tensor, torch.Tensor]:
    """Placeholder expansion and right padding of a whole batch with ``repeat_interleave``."""
    batch = input_ids.shape[0]
    counts = grids[:, 0] * (grids[:, 1] // merge[0]) * (grids[:, 2] // merge[1])
    attended = attention_mask.bool()
    flat = input_ids[attended]
    row_of = torch.arange(batch).repeat_interleave(attended.sum(dim=1))
    is_placeholder = flat == placeholder
    if int(is_placeholder.sum()) != len(counts):
        raise ValueError(f"{int(is_placeholder.sum())} placeholders for {len(counts)} images")
    repeats = torch.ones_like(flat)
    repeats[is_placeholder] = counts
    out = flat.repeat_interleave(repeats)
    out_row = row_of.repeat_interleave(repeats)
    lengths = torch.zeros(batch, dtype=torch.long).index_add_(0, row_of, repeats)
    first = torch.cumsum(lengths, 0) - lengths
    column = torch.arange(len(out)) - first[out_row]
    ids = torch.full((batch, int(lengths.max())), pad_id, dtype=input_ids.dtype)
    mask = torch.zeros((batch, ids.shape[1]), dtype=attention_mask.dtype)
    ids[out_row, column] = out
    mask[out_row, column] = 1
    return ids, mask
