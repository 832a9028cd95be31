"""Loss policies on every family of ``FAMILY_PROCESSORS`` (issue 20 item 5): ``train_on=
"last"``, a per-message ``train: False`` (on an earlier and on the last reply) and
``train_on="all"``, each against the template's own rendering.

Ground truth: differential rendering (``processor.render.content_span``: each reply's
characters in the template's rendering; its targets are the tokens overlapping them and
the special token that starts where they end, the end-of-turn, which on GLM-4.1V is the
next turn's ``<|user|>``) and ``family_checks.with_appended_stop`` (the stop token the
collators append after a last trained reply whose template writes no closing token), not
the labelling code under test (marker scan, policy labeller). ``"all"``: every attended
token is a target but the media placeholders (the processor's image token, and the ids the
processor expands a placeholder into)."""

from __future__ import annotations

from typing import Any

import pytest

from family_checks import IGNORE, with_appended_stop
from helpers import make_image
from vlm_collate import VLMCollator
from vlm_collate.processor.profile import profile_of
from vlm_collate.processor.render import content_span, renderer_for
from vlm_collate.testing.families import FAMILY_PROCESSORS

CONVERSATION = [
    {"role": "user", "content": "What is shown here?"},
    {"role": "assistant", "content": "A red car."},
    {"role": "user", "content": "And the colour?"},
    {"role": "assistant", "content": "Red, mostly."},
    {"role": "user", "content": "Count them."},
    {"role": "assistant", "content": "Three."},
]
FAST = ("qwen2_vl", "qwen3_vl", "glm4v")
_built: dict[str, Any] = {}


def processor_of(family: str) -> Any:
    if family not in _built:
        _built[family] = FAMILY_PROCESSORS[family]()
    return _built[family]


def families() -> list[Any]:
    return [
        pytest.param(f, marks=() if f in FAST else pytest.mark.slow, id=f)
        for f in FAMILY_PROCESSORS
    ]


def rendered_ids(processor: Any, conversation: list[dict[str, Any]]) -> tuple[str, dict]:
    render = renderer_for(processor)
    full = render(conversation)
    tokenizer = getattr(processor, "tokenizer", processor)
    return full, tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)


def reply_runs(processor: Any, conversation: list[dict[str, Any]]) -> tuple[list[int], list]:
    """The rendered ids and, per assistant message, the positions of its targets: tokens
    overlapping its content span, and the special token starting where the span ends."""
    render = renderer_for(processor)
    full, enc = rendered_ids(processor, conversation)
    tokenizer = getattr(processor, "tokenizer", processor)
    special = set(tokenizer.all_special_ids) | {
        i for i, t in tokenizer.added_tokens_decoder.items() if t.special
    }
    ids = [int(i) for i in enc["input_ids"]]
    offsets = [(int(a), int(b)) for a, b in enc["offset_mapping"]]
    runs = []
    for k, message in enumerate(conversation):
        if message["role"] != "assistant":
            continue
        span = content_span(render, conversation, k, full)
        assert span is not None and span.end > span.start
        run = [i for i, (a, b) in enumerate(offsets) if a < span.end and b > span.start]
        run += [i for i, (a, _) in enumerate(offsets) if a == span.end and ids[i] in special][:1]
        runs.append(sorted(set(run)))
    return ids, runs


def truth(processor: Any, conversation: list, trained: list[int]) -> list[int]:
    """Labels when only the assistant replies numbered ``trained`` are trained."""
    ids, runs = reply_runs(processor, conversation)
    targets = [False] * len(ids)
    for k in trained:
        for i in runs[k]:
            targets[i] = True
    last = len(runs) - 1
    if last in trained:  # the stop appended after a last trained reply, where needed
        ids, targets = with_appended_stop(processor, conversation, ids, targets)
    return [t if x else IGNORE for t, x in zip(ids, targets)]


def row(batch: dict, key: str = "labels") -> list[int]:
    mask = batch["attention_mask"][0].bool()
    return batch[key][0][mask].tolist()


@pytest.mark.parametrize("family", families())
def test_last_and_train_flags(family):
    processor = processor_of(family)
    last = VLMCollator(processor, train_on="last")([{"messages": CONVERSATION}])
    assert row(last) == truth(processor, CONVERSATION, [2]), "train_on='last'"
    first_off = [dict(m) for m in CONVERSATION]
    first_off[1]["train"] = False
    batch = VLMCollator(processor)([{"messages": first_off}])
    assert row(batch) == truth(processor, CONVERSATION, [1, 2]), "train=False, first reply"
    last_off = [dict(m) for m in CONVERSATION]
    last_off[5]["train"] = False
    batch = VLMCollator(processor)([{"messages": last_off}])
    assert row(batch) == truth(processor, CONVERSATION, [0, 1]), "train=False, last reply"
    first_on = [dict(m) for m in CONVERSATION]
    first_on[1]["train"] = True
    batch = VLMCollator(processor, train_on="last")([{"messages": first_on}])
    assert row(batch) == truth(processor, CONVERSATION, [0, 2]), "train=True beside 'last'"


def _placeholder_ids(processor: Any) -> set[int]:
    """The processor's own image token (read from the processor, not the library), and
    every id the library counts as media."""
    tokenizer = getattr(processor, "tokenizer", processor)
    own = set()
    for name in ("image_token_id", "image_token_index"):
        value = getattr(processor, name, None)
        if isinstance(value, int):
            own.add(value)
    token = getattr(processor, "image_token", None)
    if isinstance(token, str):
        own.add(tokenizer.convert_tokens_to_ids(token))
    return own


@pytest.mark.parametrize("family", families())
def test_train_on_all(family):
    processor = processor_of(family)
    conversation = [
        {"role": "user", "content": [
            {"type": "image", "image": make_image(64, 48, seed=5)},
            {"type": "text", "text": "What is shown here?"},
        ]},
        *CONVERSATION[1:],
    ]  # fmt: skip
    batch = VLMCollator(processor, train_on="all")([{"messages": conversation}])
    ids, labels = row(batch, "input_ids"), row(batch)
    own = _placeholder_ids(processor)
    media = own | set(profile_of(processor).media_ids)
    assert own & set(ids), "the image placeholder is in the batch"
    for i, (t, label) in enumerate(zip(ids, labels)):
        assert label == (IGNORE if t in media else t), (i, t, label)
    ignored = [t for t, label in zip(ids, labels) if label == IGNORE]
    assert ignored and set(ignored) <= media
    mask = batch["attention_mask"][0].bool()
    assert (batch["labels"][0][~mask] == IGNORE).all(), "padding labelled"
    # the last reply is closed: the template's closing token or the appended stop
    text_ids = [int(i) for i in rendered_ids(processor, CONVERSATION)[1]["input_ids"]]
    closed, _ = with_appended_stop(processor, CONVERSATION, text_ids, [False] * len(text_ids))
    assert ids[-1] == closed[-1], "the batch ends as the rendering (with its appended stop)"
    assert labels[-1] == ids[-1], "the last reply's closing token is a target"
