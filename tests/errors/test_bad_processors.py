"""Processors the library cannot serve are refused with a message saying what is
missing: a tokenizer without a pad token, a template that renders no assistant reply, a
special token outside the vocabulary."""

from __future__ import annotations

import pytest

from helpers import one_turn
from vlm_collate import qwen2_5_collate_fn
from vlm_collate.processor.tokens import token_id
from vlm_collate.testing import qwen2_5_vl_processor

GOOD = one_turn("Is it blue?", reply="Yes")


def test_tokenizer_without_pad_token_is_a_clear_error():
    processor = qwen2_5_vl_processor()
    processor.tokenizer.pad_token = None
    with pytest.raises(ValueError, match="has no pad token"):
        qwen2_5_collate_fn([GOOD], processor)


def test_template_without_assistant_turn_is_a_clear_error():
    processor = qwen2_5_vl_processor()
    processor.chat_template = (
        "{% for m in messages %}{% if m['role'] != 'assistant' %}<|im_start|>{{ m['role'] }}\n"
        "{% for c in m['content'] %}{{ c['text'] }}{% endfor %}<|im_end|>\n{% endif %}{% endfor %}"
    )
    with pytest.raises(ValueError, match="does not render assistant replies"):
        qwen2_5_collate_fn([GOOD], processor)


def test_missing_special_token_is_a_clear_error(qwen_tokenizer):
    with pytest.raises(ValueError, match="not in the tokenizer's vocabulary"):
        token_id(qwen_tokenizer, "<|media_pad|>", what="media token")
