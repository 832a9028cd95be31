"""``check_template`` and ``vlm-collate check``: the label path a template gets, and why."""

from __future__ import annotations

import logging

import pytest

from vlm_collate import TemplateError, check_template
from vlm_collate.cli.commands import main
from vlm_collate.processor.markers import labels_plan
from vlm_collate.testing import builders, vocabularies
from vlm_collate.testing.vocabularies import template_text


def _qwen2(template: str):
    tokenizer = builders.qwen2_tokenizer()
    tokenizer.chat_template = template
    return tokenizer


def test_verified_markers_are_reported_with_every_shape():
    report = check_template(vocabularies.phi4_tokenizer(template_text("phi4_multimodal")))
    assert report.method == "markers"
    assert report.headers == ["<|assistant|>"] and report.ends == ["<|end|>"]
    assert {"empty reply", "multi-part reply", "tool turn"} <= set(report.verified)
    assert not report.failed and not report.refused
    assert "fast path" in str(report)


def test_string_only_template_is_given_strings_and_says_so():
    """Qwen3's template prints list content as a Python literal: a multi-part reply is
    given to it as one string, and the report names the form each role takes."""
    tokenizer = builders.qwen3_omni_tokenizer()
    tokenizer.chat_template = template_text("qwen3")
    report = check_template(tokenizer)
    assert report.method == "markers"
    assert report.unrendered == [] and "multi-part reply" in report.verified
    assert "<|im_start|>assistant\n<think>\n\n</think>\n\n" in report.headers
    assert report.content_forms["assistant"] == ["string"]
    assert "assistant: string" in str(report)


def test_a_template_whose_markers_fail_uses_the_exact_path_and_says_so(caplog):
    template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    with caplog.at_level(logging.WARNING, logger="vlm_collate"):
        report = check_template(_qwen2(template))
    assert report.method == "exact" and report.reason
    assert "exact path" in str(report) and "exact path" in caplog.text


def test_the_plan_is_derived_once_per_template(caplog):
    tokenizer = _qwen2(template_text("qwen2_5_vl"))
    with caplog.at_level(logging.INFO, logger="vlm_collate"):
        first = labels_plan(tokenizer)
        assert labels_plan(tokenizer) is first
    assert caplog.text.count("markers verified") == 1


def test_a_template_without_assistant_replies_is_an_error():
    template = (
        "{% for m in messages %}{% if m['role'] == 'user' %}{{ m['content'] }}{% endif %}"
        "{% endfor %}"
    )
    with pytest.raises(TemplateError, match="does not render assistant replies"):
        check_template(_qwen2(template))


@pytest.mark.slow
def test_cli_check_on_a_saved_tokenizer(tmp_path, capsys):
    tokenizer = vocabularies.mistral_tekken_tokenizer(template_text("mistral_small_3_1"))
    tokenizer.save_pretrained(tmp_path)
    assert main(["check", "--processor", str(tmp_path), "--color", "never"]) == 0
    out = capsys.readouterr().out
    assert "labels: markers" in out and "'[/INST]'" in out and "'</s>'" in out
    assert "shape the template refuses: tool turn" in out


def test_cli_check_of_a_missing_folder_is_one_line(tmp_path, capsys):
    assert main(["check", "--processor", str(tmp_path / "absent")]) == 1
    assert "no such folder" in capsys.readouterr().err


def test_the_report_says_what_closes_each_reply():
    """A closing template names its end-of-turn; GLM-4.1V (no closing token of its own)
    names the next turn's openers mid-conversation and the appended eos after the last."""
    from vlm_collate.testing.families import glm4v_processor

    closed = check_template(_qwen2(template_text("qwen2_5_vl")))
    assert "closes every reply" in closed.closing and "'<|im_end|>'" in closed.closing
    assert "closing: " in str(closed)
    glm = glm4v_processor()
    report = check_template(glm)
    assert "appended stop token '<|endoftext|>'" in report.closing
    assert "('<|user|>')" in report.closing  # GLM-4.1V drops tool turns: never <|assistant|>
    assert report.closing in str(report)
