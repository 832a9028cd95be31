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
        gt_ids, gt_targets = with_appended_stop(
            processor, conversation, *offset_targets(processor, conversation)
        )
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


# --------------------------------------------------------------------------- the appended stop

_MARK = "\ue0f0"  # private use: where a reply's content ends in a rendering


def _special_ids_of(tokenizer: Any) -> set[int]:
    return set(tokenizer.all_special_ids) | {
        i for i, t in tokenizer.added_tokens_decoder.items() if t.special
    }


_CLOSES: dict[int, tuple[Any, bool]] = {}


def template_closes(processor: Any) -> bool:
    """:func:`_template_closes`, once per processor."""
    hit = _CLOSES.get(id(processor))
    if hit is None or hit[0] is not processor:
        hit = _CLOSES[id(processor)] = (processor, _template_closes(processor))
    return hit[1]


def _template_closes(processor: Any) -> bool:
    """Whether the chat template writes a special token right after a reply, read from the
    template itself (independently of the library): a one-turn conversation is rendered
    with the reply ending in a private-use mark, in string and in list content; the
    template closes its replies when, in the rendering without the mark, a special token
    starts where the mark was (the rule of docs/labels.md: no special token after the last
    reply means the collators append the stop token)."""
    tokenizer = getattr(processor, "tokenizer", processor)
    special = _special_ids_of(tokenizer)
    for form in ("string", "list"):

        def conversation(reply: str, form: str = form) -> list[dict[str, Any]]:
            def content(text: str) -> Any:
                return text if form == "string" else [{"type": "text", "text": text}]

            return [
                {"role": "user", "content": content("What is shown here?")},
                {"role": "assistant", "content": content(reply)},
            ]

        try:
            marked = processor.apply_chat_template(
                conversation("A red car." + _MARK), tokenize=False
            )
            plain = processor.apply_chat_template(conversation("A red car."), tokenize=False)
        except Exception:  # noqa: BLE001 - a template refusing a form raises anything
            continue
        if marked.count(_MARK) != 1 or marked.replace(_MARK, "") != plain:
            continue  # the form is not rendered as text
        end = marked.index(_MARK)
        enc = tokenizer(plain, add_special_tokens=False, return_offsets_mapping=True)
        return any(
            int(s) == end and int(t) in special
            for t, (s, _) in zip(enc["input_ids"], enc["offset_mapping"])
        )
    raise AssertionError("the template renders no reply text in string or list content")


def with_appended_stop(
    processor: Any,
    conversation: Sequence[dict[str, Any]],
    ids: list[int],
    targets: list[bool],
) -> tuple[list[int], list[bool]]:
    """The ground truth ``(ids, targets)`` of a rendering as the collators return it
    (``close_last_reply="auto"``): where the template writes no closing token and the
    conversation ends with an assistant reply, the tokenizer's eos follows the rendered
    text and is a target, as is whitespace the template writes between the reply and it
    (docs/labels.md); nothing else the template writes after the reply is."""
    if not conversation or conversation[-1]["role"] != "assistant":
        return ids, targets
    if template_closes(processor):
        return ids, targets
    tokenizer = getattr(processor, "tokenizer", processor)
    eos = tokenizer.eos_token_id
    assert eos is not None, "a template without closing token needs an eos to append"
    targets = list(targets)
    last = max((i for i, t in enumerate(targets) if t), default=-1)
    tail = list(range(last + 1, len(ids)))
    if tail and not tokenizer.decode([ids[i] for i in tail]).strip():
        for i in tail:
            targets[i] = True
    return [*ids, eos], [*targets, True]
