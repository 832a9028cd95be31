"""The user-text cases of issue 20 on published plain-header templates (ground truth
from the published format, see test_templates): a user typing the template's own
header never gets text labelled; the exact path is chosen, and check_template says why.
The Mistral v1 vocabulary conversion is checked against SentencePiece itself."""

from __future__ import annotations

import importlib.resources

import pytest
import torch
from test_templates import (  # noqa: F401 - tokenizers_by_spec is a fixture
    IGNORE,
    expected,
    spec_targets,
    tokenizers_by_spec,
)

from vlm_collate import build_labels, check_template


def _labelled(name, tokenizers, conversation) -> list[str]:
    tokenizer = tokenizers[name]
    ids, targets = spec_targets(name, tokenizer, conversation)
    labels = build_labels(torch.tensor([ids]), [conversation], tokenizer)[0].tolist()
    assert labels == expected(ids, targets, len(ids))
    return tokenizer.convert_ids_to_tokens([t for t in labels if t != IGNORE])


def test_mistral_v0_2_user_typing_inst_labels_only_the_reply(tokenizers_by_spec):  # noqa: F811
    conversation = [
        {"role": "user", "content": "Type [/INST] now"},
        {"role": "assistant", "content": "Fine, done."},
    ]
    assert _labelled("mistral_v0_2", tokenizers_by_spec, conversation) == [
        "▁Fine",
        ",",
        "▁done",
        ".",
        "</s>",
    ]
    report = check_template(tokenizers_by_spec["mistral_v0_2"])
    assert report.method == "exact" and "in user turns" in report.reason, report.reason


def test_vicuna_user_typing_assistant_labels_only_the_reply(tokenizers_by_spec):  # noqa: F811
    conversation = [
        {"role": "user", "content": [{"type": "text", "text": "Say ASSISTANT: hello"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Fine, done."}]},
        {"role": "user", "content": [{"type": "text", "text": "ASSISTANT: again"}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Yes."}]},
    ]
    tokens = _labelled("llava_1_5", tokenizers_by_spec, conversation)
    assert "".join(tokens).replace("▁", " ").strip() == "Fine, done. Yes."
    report = check_template(tokenizers_by_spec["llava_1_5"])
    assert report.method == "exact", report.reason
    assert "no special token closes an assistant reply" in report.reason


@pytest.mark.parametrize("typed", ["<|assistant|>\n", "assistant", "assistant<|end_of_role|>"])
def test_granite_user_typing_a_header_labels_only_the_reply(typed, tokenizers_by_spec):  # noqa: F811
    """Granite's role tokens are special (escaped in content by the collators); what a
    user can type is their plain-text look-alikes and the role word."""
    tokenizer = tokenizers_by_spec["granite3"]
    text = typed.replace("<|end_of_role|>", "")  # special-token text is escaped in content
    conversation = [
        {"role": "system", "content": f"Never write {text} yourself"},
        {"role": "user", "content": f"Type {text} now"},
        {"role": "assistant", "content": "Fine, done."},
    ]
    tokens = _labelled("granite3", tokenizers_by_spec, conversation)
    assert tokenizer.convert_tokens_to_string(tokens) == "Fine, done.<|end_of_text|>"
    report = check_template(tokenizer)
    assert report.method == "markers", report.reason


def test_mistral_v1_vocabulary_encodes_as_sentencepiece(tokenizers_by_spec):  # noqa: F811
    import sentencepiece

    source = importlib.resources.files("mistral_common") / "data" / "tokenizer.model.v1"
    with importlib.resources.as_file(source) as file:
        sp = sentencepiece.SentencePieceProcessor(model_file=str(file))
    tokenizer = tokenizers_by_spec["mistral_v0_2"]
    for text in [
        "hello there, General Kenobi!",
        " [INST] Type [/INST] now [/INST] Fine, done.",
        "  two  spaces\n\nnew x=1; 数字 😀 ünïcødé",
        "USER: <image>\nWhat? ASSISTANT: A red car.",
    ]:
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == sp.encode(text), text
