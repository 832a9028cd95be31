"""The seed-compatible helpers and the content-search fallback."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

import vlm_collate
from vlm_collate import (
    build_labels,
    decode_single_token,
    expand_image_tokens,
    extract_assistant_text,
    find_pattern_indices,
)
from vlm_collate.processor.markers import markers_for
from vlm_collate.testing import qwen2_tokenizer


@pytest.mark.parametrize("form", [list, np.array, torch.tensor])
def test_find_pattern_indices_accepts_any_sequence(form):
    template = form([5, 1, 2, 3, 1, 2, 3])
    assert find_pattern_indices(template, form([1, 2, 3])) == (1, 4)
    assert find_pattern_indices(template, form([1, 2, 3]), 2) == (4, 7)
    assert find_pattern_indices(template, form([9, 2, 3]), 0, allow_first_token_mismatch=True) == (
        1,
        4,
    )
    assert find_pattern_indices(template, form([9, 2, 3])) == (-1, -1)
    assert find_pattern_indices(form([1]), form([1, 2])) == (-1, -1)


def test_seed_private_names_are_kept():
    assert vlm_collate._find_pattern_indices is find_pattern_indices
    assert vlm_collate._expand_image_tokens is expand_image_tokens


def test_extract_assistant_text_joins_every_text_part():
    assert extract_assistant_text({"content": "plain"}) == "plain"
    parts = [{"type": "text", "text": "a"}, {"type": "image"}, {"type": "text", "text": "b"}]
    assert extract_assistant_text({"content": parts}) == "ab"
    assert extract_assistant_text({"content": []}) == ""


def test_decode_single_token_forms(qwen_tokenizer):
    tid = qwen_tokenizer.convert_tokens_to_ids("<|im_end|>")
    for form in (tid, [tid], torch.tensor(tid), torch.tensor([tid]), np.int64(tid)):
        assert decode_single_token(qwen_tokenizer, form) == "<|im_end|>"
    with pytest.raises(ValueError, match="one id"):
        decode_single_token(qwen_tokenizer, [tid, tid])


def test_expand_image_tokens_many_images_per_sample():
    ids = torch.tensor([7, 9, 8, 9, 6])
    out_ids, out_mask = expand_image_tokens(
        ids, torch.ones(5, dtype=torch.long), [[1, 2, 4], [2, 2, 2]], 9
    )
    assert out_ids.tolist() == [7, 9, 9, 8, 9, 9, 6]
    assert out_mask.tolist() == [1] * 7


PLAIN_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"


def test_template_without_markers_falls_back_to_the_exact_path(caplog):
    tokenizer = qwen2_tokenizer()
    tokenizer.chat_template = PLAIN_TEMPLATE
    conversation = [
        {"role": "user", "content": "Is 2 even? 2"},
        {"role": "assistant", "content": "2"},
        {"role": "user", "content": "Say the sky is blue."},
        {"role": "assistant", "content": "The sky is blue."},
    ]
    with caplog.at_level(logging.WARNING, logger="vlm_collate"):
        assert markers_for(tokenizer) is None
    assert "exact path" in caplog.text
    text = tokenizer.apply_chat_template(conversation, tokenize=False)
    # Ground truth from character offsets of each reply in the rendering.
    spans, cursor = [], 0
    for m in conversation:
        header = f"{m['role']}: "
        start = text.index(header, cursor) + len(header)
        if m["role"] == "assistant":
            spans.append((start, start + len(m["content"])))
        cursor = start + len(m["content"])
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    want = [
        t if any(a < e and b > s for s, e in spans) else -100
        for t, (a, b) in zip(enc["input_ids"], enc["offset_mapping"])
    ]
    labels = build_labels(torch.tensor([enc["input_ids"]]), [conversation], tokenizer)
    assert labels[0].tolist() == want
    # Tokens that merge reply text with the template's space or newline are targets too.
    assert tokenizer.decode([t for t in want if t != -100]) == "2 The sky is blue.\n"
