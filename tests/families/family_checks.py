"""Checks shared by the per-family tests: label cases and offset-derived ground truth.

Ground truth comes from ``vlm_collate.testing.offset_targets`` (character offsets
of the rendered conversation), never from the labelling code under test. The
processors expand each media placeholder to many tokens; both sides are compared
with each run of an expanded placeholder collapsed to one token.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from helpers import IGNORE, assistant, make_image, user
from vlm_collate.testing import offset_targets

__all__ = ["IGNORE", "assistant", "make_image", "user"]  # re-exported to the family tests


def numbered_image(k: int) -> dict[str, Any]:
    """The k-th image item of the label cases: a size and pixels of its own."""
    return {"type": "image", "image": make_image(48 + 16 * k, 40 + 8 * k, seed=k)}


def label_cases(media: Callable[[int], dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Conversations covering every label rule; ``media(k)`` makes the k-th media item.

    Multi-turn with a system prompt, prompt echo (the answer's text is in the
    question), a multi-part reply, an empty reply, text only, and two media
    items in one sample.
    """
    return [
        [
            {"role": "system", "content": "You are brief."},
            user(media(0), "What is shown?"),
            assistant("A cat on a blue sky."),
            user("And the colour?"),
            assistant("Blue."),
        ],
        [user("Say yes or no: yes"), assistant("yes")],
        [user(media(1), "Describe it."), assistant(["The left part. ", "The right part."])],
        [user("Anything?"), assistant(""), user("Now answer."), assistant("Sure, 12 cats.")],
        [user("Two?"), assistant("One\n two three")],
        [
            user(media(2), "Compare", media(3), "these."),
            assistant("They differ: the first is red."),
        ],
    ]


def collapse(ids: Sequence[int], runs: set[int]) -> list[int]:
    """Positions kept when each run of a token in ``runs`` is collapsed to one."""
    return [i for i, t in enumerate(ids) if not (t in runs and i > 0 and ids[i - 1] == t)]


def assert_exact_labels(
    batch: dict[str, torch.Tensor],
    processor: Any,
    conversations: Sequence[Sequence[dict[str, Any]]],
    expanded: set[int],
    never_target: set[int] = frozenset(),
) -> None:
    """Unshifted ``batch`` labels equal the offset ground truth row by row.

    ``expanded``: ids of placeholders the processor repeats (collapsed on both
    sides); ``never_target``: media ids that must be -100 wherever they are.
    """
    assert batch["labels"].shape == batch["input_ids"].shape
    for row, conversation in enumerate(conversations):
        mask = batch["attention_mask"][row].bool()
        ids = batch["input_ids"][row][mask].tolist()
        labels = batch["labels"][row][mask].tolist()
        assert (batch["labels"][row][~mask] == IGNORE).all(), f"row {row}: padding labelled"
        for t, label in zip(ids, labels):
            if t in expanded | set(never_target):
                assert label == IGNORE, f"row {row}: media token {t} labelled"
        gt_ids, gt_targets = offset_targets(processor, conversation)
        keep = collapse(ids, expanded)
        gt_keep = collapse(gt_ids, expanded)
        assert [ids[i] for i in keep] == [gt_ids[i] for i in gt_keep], f"row {row}: ids differ"
        got = [labels[i] != IGNORE for i in keep]
        assert got == [gt_targets[i] for i in gt_keep], f"row {row}: targets differ"
        assert all(labels[i] == ids[i] for i in keep if labels[i] != IGNORE)


def assert_shift_consistent(
    shifted: dict[str, torch.Tensor], unshifted: dict[str, torch.Tensor], skip: Sequence[str] = ()
) -> None:
    """The default (pre-shifted) batch is the unshifted one with labels[:, 1:] and
    the token-axis tensors [:, :-1]; other tensors (but ``skip``) are identical."""
    assert shifted.keys() - {"shift_labels"} == unshifted.keys()
    assert torch.equal(shifted["labels"], unshifted["labels"][:, 1:])
    if "shift_labels" in shifted:  # decoder-only families; an encoder-decoder loss never shifts
        assert torch.equal(shifted["shift_labels"], shifted["labels"])
    for key in ("input_ids", "attention_mask"):
        assert torch.equal(shifted[key], unshifted[key][:, :-1])
    for key, value in unshifted.items():
        if key in skip:
            continue
        if key not in ("labels", "input_ids", "attention_mask") and isinstance(value, torch.Tensor):
            if value.ndim == 2 and value.shape == unshifted["input_ids"].shape:
                assert torch.equal(shifted[key], value[:, :-1]), key
            else:
                assert torch.equal(shifted[key], value), key


def token_count(batch: dict[str, torch.Tensor], tid: int) -> list[int]:
    """Per row, how many times ``tid`` occurs among attended tokens."""
    return ((batch["input_ids"] == tid) & batch["attention_mask"].bool()).sum(-1).tolist()
