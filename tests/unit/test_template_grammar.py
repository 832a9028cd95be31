"""Marker derivation fuzzed: random chat templates built from a grammar of real template
shapes (turn open/close tokens, role names and header forms, text between the reply and
its closing token, separators, trimming, a system turn merged into the first user turn, a
BOS written by the template, a trailer after the last turn), on the real Qwen2
vocabulary. Ground truth comes from a Python twin of each generated template that records
where it writes every reply and its end-of-turn, independent of the library's own
differential rendering; labels (whichever path verification picks) must match it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vlm_collate import build_labels
from vlm_collate.processor.markers import labels_plan
from vlm_collate.testing import builders

IGNORE = -100
TURN_TOKENS = [
    ("<|im_start|>", "<|im_end|>"),
    ("<|object_ref_start|>", "<|object_ref_end|>"),
    ("<|box_start|>", "<|box_end|>"),
]
HEADER_FORMS = ["{role}\n", "{role}: ", "[{role}]\n\n", "\n{role}\n"]


@dataclass(frozen=True)
class Grammar:
    """One template shape: how each turn opens and closes, and what surrounds it."""

    open: str
    close: str
    header_form: str
    assistant_name: str
    before_close: str
    separator: str
    trim: bool
    merge_system: bool
    bos: str
    trailer: str

    def header(self, role: str) -> str:
        name = self.assistant_name if role == "assistant" else role
        return self.open + self.header_form.format(role=name)

    def header_tail(self) -> str:
        """What follows the role name in a header (other roles, e.g. tool, are written
        by name)."""
        return self.header_form.split("{role}")[1]

    def template(self) -> str:
        """The Jinja chat template of this shape."""
        q = json.dumps  # a JSON string is a valid Jinja string literal
        content = "(m['content'] | trim)" if self.trim else "m['content']"
        tail = f"{q(self.before_close)} + {q(self.close)} + {q(self.separator)}"
        system_turn = (
            "{% set ns.system = " + content + " %}"
            if self.merge_system
            else "{{ " + q(self.header("system")) + " + " + content + " + " + tail + " }}"
        )
        return (
            "{% set ns = namespace(system='') %}{{ " + q(self.bos) + " }}"
            "{% for m in messages %}"
            "{% if m['role'] == 'system' %}" + system_turn + ""
            "{% elif m['role'] == 'user' %}"
            "{{ "
            + q(self.header("user"))
            + " + (ns.system + '\\n\\n' if ns.system else '') + "
            + content
            + " + "
            + tail
            + " }}{% set ns.system = '' %}"
            "{% elif m['role'] == 'assistant' %}"
            "{{ " + q(self.header("assistant")) + " + " + content + " + " + tail + " }}"
            "{% else %}{{ "
            + q(self.open)
            + " + m['role'] + "
            + q(self.header_tail())
            + " + "
            + content
            + " + "
            + tail
            + " }}{% endif %}{% endfor %}{{ "
            + q(self.trailer)
            + " }}"
        )

    def rendered(self, messages: list[dict[str, str]]) -> tuple[str, list[tuple[int, int]]]:
        """``(text, target character spans)``: the twin of :meth:`template`, recording
        each reply and its end-of-turn (the text before the close token, and the token)."""
        text, spans, system = self.bos, [], ""
        for m in messages:
            body = m["content"].strip() if self.trim else m["content"]
            if m["role"] == "system" and self.merge_system:
                system = body
                continue
            if m["role"] == "user" and system:
                body, system = f"{system}\n\n{body}", ""
            text += self.header(m["role"])
            start = len(text)
            text += body + self.before_close + self.close
            if m["role"] == "assistant":
                spans.append((start, len(text)))
            text += self.separator
        return text + self.trailer, spans


grammars = st.builds(
    lambda turn, **kw: Grammar(open=turn[0], close=turn[1], **kw),
    turn=st.sampled_from(TURN_TOKENS),
    header_form=st.sampled_from(HEADER_FORMS),
    assistant_name=st.sampled_from(["assistant", "model", "Bot"]),
    before_close=st.sampled_from(["", "", "\n"]),
    separator=st.sampled_from(["", "\n", "\n\n"]),
    trim=st.booleans(),
    merge_system=st.booleans(),
    bos=st.sampled_from(["", "<|quad_start|>"]),
    trailer=st.sampled_from(["", "<|endoftext|>"]),
)

WORDS = ["yes", "the", "cat", "A", "2", "ünï", "数字", "assistant", "user", "model", ":", "Bot"]


@st.composite
def texts(draw) -> str:
    words = draw(st.lists(st.sampled_from(WORDS), max_size=4))
    body = "".join(w + draw(st.sampled_from([" ", "", "\n"])) for w in words).rstrip()
    return draw(st.sampled_from(["", "", " ", "\n"])) + body


@st.composite
def conversations(draw) -> list[dict[str, str]]:
    messages = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(texts())})
    for _ in range(draw(st.integers(1, 3))):
        messages.append({"role": "user", "content": draw(texts())})
        messages.append({"role": "assistant", "content": draw(texts())})
    if draw(st.integers(0, 3)) == 0:
        messages.append({"role": "user", "content": draw(texts())})
    return messages


@pytest.fixture(scope="module")
def tokenizer():
    """A Qwen2 tokenizer of this module's own (its chat template is set per example)."""
    return builders.qwen2_tokenizer()


def targets_of(tokenizer: Any, grammar: Grammar, messages: list[dict]) -> list[int]:
    """The twin's labels: tokens overlapping a reply or its end-of-turn are targets."""
    text, spans = grammar.rendered(messages)
    assert tokenizer.apply_chat_template(messages, tokenize=False) == text  # the twin is true
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    return [
        t if any(a < e and b > s for s, e in spans) else IGNORE
        for t, (a, b) in zip(enc["input_ids"], enc["offset_mapping"])
    ]


@pytest.mark.slow
def test_generated_templates_label_exactly(tokenizer):
    paths = []

    @settings(max_examples=100, deadline=None, suppress_health_check=list(HealthCheck))
    @given(grammars, st.lists(conversations(), min_size=1, max_size=3))
    def check(grammar, batch):
        tokenizer.chat_template = grammar.template()
        want = [targets_of(tokenizer, grammar, c) for c in batch]
        rows = [tokenizer(tokenizer.apply_chat_template(c, tokenize=False))["input_ids"]
                for c in batch]  # fmt: skip
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), tokenizer.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, row in enumerate(rows):
            ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
        labels = build_labels(ids, batch, tokenizer, attention_mask=mask)
        for i, row in enumerate(rows):
            assert labels[i, : len(row)].tolist() == want[i], (grammar, batch[i])
            assert (labels[i, len(row) :] == IGNORE).all()
        paths.append(labels_plan(tokenizer).method)

    check()
    # The grammar's shapes all have a header and a closing special token: verification
    # should trust markers for most of them (the exact path covers the rest, exactly).
    assert paths.count("markers") >= len(paths) // 2, paths
