"""A template with a closing token whose reply is rendered without it takes nothing from
the next turn: Seed-OSS (ByteDance-Seed/Seed-OSS-36B-Instruct's chat_template.jinja, as
quoted by macMLX's SeedOssChatTemplate with the thinking-budget table written as an
equivalent if/elif ladder; testing/templates/seed_oss.jinja) writes ``<seed:eos>`` after a
reply but nothing after an empty one, and every turn opens with ``<seed:bos>``, which
stops nothing. Ground truth: the template's own rendering and the tokenizer's offsets."""

from __future__ import annotations

import pytest

from vlm_collate import VLMCollator, build_labels
from vlm_collate.processor.closing import closing_ids, reply_closing
from vlm_collate.testing.standins import small_tokenizer
from vlm_collate.testing.vocabularies import template_text

SEED_SPECIALS = [
    "<seed:bos>", "<seed:eos>", "<seed:pad>", "<seed:tool_call>", "</seed:tool_call>",
    "<seed:think>", "</seed:think>", "<seed:cot_budget_reflect>", "</seed:cot_budget_reflect>",
]  # fmt: skip


@pytest.fixture(scope="module")
def seed():
    return small_tokenizer(
        SEED_SPECIALS,
        chat_template=template_text("seed_oss"),
        bos_token="<seed:bos>",
        eos_token="<seed:eos>",
        pad_token="<seed:pad>",
    )


EMPTY = [
    {"role": "user", "content": "Anything?"},
    {"role": "assistant", "content": ""},
    {"role": "user", "content": "Now answer."},
    {"role": "assistant", "content": "Sure, 12 cats."},
]


def _targets(tokenizer, ids, labels):
    return [t for t, label in zip(ids, labels) if label != -100]


def test_the_template_closes_with_seed_eos(seed):
    eos = seed.convert_tokens_to_ids("<seed:eos>")
    assert closing_ids(seed) == {eos}
    assert reply_closing(seed).closes


def test_an_empty_reply_takes_nothing_from_the_next_turn(seed):
    text = seed.apply_chat_template(EMPTY, tokenize=False)
    # The template's own rendering: nothing after the empty reply's header.
    assert "<seed:bos>assistant<seed:bos>user\nNow answer." in text
    batch = VLMCollator(seed)([{"messages": EMPTY}])
    ids = batch["input_ids"][0].tolist()
    assert ids == seed(text, add_special_tokens=False)["input_ids"]  # nothing appended
    got = _targets(seed, ids, batch["labels"][0].tolist())
    # Only the second reply (its text as rendered, trimmed, after "\n") and its <seed:eos>.
    assert seed.decode(got).strip() == "Sure, 12 cats.<seed:eos>"
    assert seed.convert_tokens_to_ids("<seed:bos>") not in got
    labels = build_labels(batch["input_ids"], [EMPTY], seed, batch["attention_mask"])
    assert labels[0].tolist() == batch["labels"][0].tolist()
