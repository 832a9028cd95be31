"""No user text is ever labelled: assistant headers (of the template and of other
templates) typed in user, system and tool turns, in string and list content, on every
template of the matrix (ground truth from the published format, see test_templates);
both content forms of a bare tokenizer; the run-time row check of the marker path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_templates import (  # noqa: F401 - tokenizers_by_spec is a fixture
    IGNORE,
    SPECS,
    expected,
    padded,
    spec_targets,
    tokenizers_by_spec,
)

from vlm_collate import build_labels, check_template
from vlm_collate.pipeline.labels import label_array
from vlm_collate.processor.markers import OTHER_HEADERS, labels_plan
from vlm_collate.testing.families import glm4v_processor, smolvlm_processor

HEADERS = [*OTHER_HEADERS, "<|im_start|>assistant", "<｜Assistant｜>", "[/INST]"]


def _plain_headers(tokenizer) -> list[str]:
    """Header texts a user can type into this vocabulary (special-token strings are
    escaped in content by the collators, so they are left out here)."""
    specials = set(tokenizer.all_special_tokens) | {
        t.content for t in tokenizer.added_tokens_decoder.values() if t.special
    }
    return [h for h in HEADERS if not any(s in h for s in specials if s)]


@st.composite
def typed_header_conversations(draw, headers: list[str], system: bool, list_form: bool):
    def typed() -> str:
        h = draw(st.sampled_from(headers))
        where = draw(st.sampled_from(["start", "middle", "end"]))
        return {"start": f"{h}Go on", "middle": f"Type {h} now", "end": f"Say {h}"}[where]

    def content(text: str):
        return [{"type": "text", "text": text}] if list_form else text

    messages = []
    if system and draw(st.booleans()):
        messages.append({"role": "system", "content": content(typed())})
    for _ in range(draw(st.integers(1, 3))):
        messages.append({"role": "user", "content": content(typed())})
        messages.append({"role": "assistant", "content": content("Fine, done.")})
    return messages


@pytest.mark.parametrize("list_form", [False, True], ids=["string", "list"])
@pytest.mark.parametrize("name", sorted(SPECS))
def test_typed_headers_are_never_labelled(name, list_form, tokenizers_by_spec):  # noqa: F811
    tokenizer = tokenizers_by_spec[name]
    spec = SPECS[name]
    if list_form and not spec.list_content:
        list_form = False  # string-only template: given strings (see check_template)
    headers = _plain_headers(tokenizer)

    @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        st.lists(
            typed_header_conversations(headers, spec.system, list_form), min_size=1, max_size=3
        )
    )
    def check(batch):
        truth = [spec_targets(name, tokenizer, c) for c in batch]
        ids, mask = padded([t[0] for t in truth], tokenizer.pad_token_id)
        want = [expected(i, t, ids.shape[1]) for i, t in truth]
        assert build_labels(ids, batch, tokenizer, attention_mask=mask).tolist() == want

    check()


def test_smolvlm_list_only_template_on_a_bare_tokenizer_equals_the_processor():
    """SmolVLM-Instruct's published template reads list content only: a bare tokenizer
    is given list content, and labels the same ids as the processor does."""
    processor = smolvlm_processor()
    tokenizer = processor.tokenizer
    tokenizer.chat_template = processor.chat_template
    report = check_template(tokenizer)
    assert report.content_forms["assistant"] == ["list"]
    assert report.method == "markers", report.reason
    conversation = [
        {"role": "user", "content": "Type \nAssistant: now"},
        {"role": "assistant", "content": "Fine, done."},
        {"role": "user", "content": "Again?"},
        {"role": "assistant", "content": "Yes."},
    ]
    text = processor.apply_chat_template(
        [{**m, "content": [{"type": "text", "text": m["content"]}]} for m in conversation],
        tokenize=False,
    )
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    spans = []
    for reply in ("Fine, done.", "Yes."):
        at = text.index("Assistant: " + reply + "<end_of_utterance>") + len("Assistant: ")
        spans.append((at, at + len(reply + "<end_of_utterance>")))
    want = [
        t if any(a < e and b > s for s, e in spans) else IGNORE
        for t, (a, b) in zip(enc["input_ids"], enc["offset_mapping"])
    ]
    ids = torch.tensor([enc["input_ids"]])
    assert build_labels(ids, [conversation], tokenizer)[0].tolist() == want
    assert build_labels(ids, [conversation], processor)[0].tolist() == want


def test_glm4v_uses_markers_and_checks_rows_with_a_dropped_turn():
    """GLM-4.1V's header is ``<|assistant|>\\n`` (not ``\\n``): markers are verified. Its
    template drops tool turns; such a row fails the run-time check and is labelled by the
    exact path, and is named."""
    processor = glm4v_processor()
    plan = labels_plan(processor)
    assert plan.method == "markers", plan.reason
    tokenizer = processor.tokenizer
    assert tokenizer.decode(plan.markers.starts[0]) == "<|assistant|>\n"
    conversations = [
        [
            {"role": "user", "content": "What is 6 times 7?"},
            {"role": "assistant", "content": "Let me compute."},
            {"role": "tool", "content": "42"},
            {"role": "assistant", "content": "It is 42."},
        ],
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}],
    ]
    rows = [
        tokenizer(
            processor.apply_chat_template(
                [{**m, "content": m["content"]} for m in c], tokenize=False
            ),
            add_special_tokens=False,
        )["input_ids"]
        for c in conversations
    ]
    ids, mask = padded(rows, tokenizer.pad_token_id)
    exact_rows: list[int] = []
    labels, found = label_array(ids, conversations, processor, mask, exact_rows=exact_rows)
    assert exact_rows == [0]
    text = tokenizer.decode([t for t in labels[0].tolist() if t != IGNORE])
    assert "Let me compute." in text and "It is 42." in text
    assert "What is" not in text and "42<" not in text
    assert np.asarray(found).tolist() == [2, 1]
