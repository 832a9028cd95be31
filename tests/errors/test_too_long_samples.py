"""Samples longer than ``max_length``: an error naming the sample and both lengths, or
dropped, or truncated as asked. Truncation keeps every media block whole (placeholders
and the family's delimiters) or drops the sample; a cut reply keeps its surviving
targets."""

from __future__ import annotations

import pytest

from helpers import make_image, one_turn
from vlm_collate import qwen2_5_collate_fn, testing
from vlm_collate.processor.profile import media_block_ids


def chat(reply: str = "Yes", *, images=(), question: str = "Is it blue?") -> dict:
    return one_turn(question, reply=reply, images=images)


GOOD = chat()


def test_overflow_error_names_sample_and_lengths(qwen_processor):
    long = chat(reply="word " * 200)
    with pytest.raises(ValueError, match=r"sample 1 has \d+ tokens, more than max_length=64"):
        qwen2_5_collate_fn([GOOD, long], qwen_processor, max_length=64)


def test_overflow_drop_and_truncate(qwen_processor):
    long = chat(reply="word " * 200)
    dropped = qwen2_5_collate_fn([GOOD, long], qwen_processor, max_length=64, on_overflow="drop")
    assert dropped["input_ids"].shape[0] == 1
    assert dropped.report.dropped[0][0] == 1 and "max_length=64" in dropped.report.dropped[0][1]

    cut = qwen2_5_collate_fn(
        [GOOD, long], qwen_processor, max_length=64, on_overflow="truncate", shift=False
    )
    assert cut["input_ids"].shape == (2, 64)
    assert cut.report.truncated == [1]
    # The cut reply keeps its surviving tokens as targets, up to the last column.
    assert cut["labels"][1, -1] == cut["input_ids"][1, -1] != -100


def test_truncate_never_cuts_media(qwen_processor):
    image_late = {
        "conversation": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "word " * 40},
                    {"type": "image", "image": make_image(128, 128)},
                ],
            },
            {"role": "assistant", "content": "Yes"},
        ]
    }
    text_late = chat(reply="word " * 200, images=[make_image(32, 32)])
    out = qwen2_5_collate_fn(
        [GOOD, image_late, text_late],
        qwen_processor,
        max_length=60,
        on_overflow="truncate",
        shift=False,
    )
    # image_late's image would be cut, so it is dropped; text_late is cut after its image.
    assert [i for i, _ in out.report.dropped] == [1]
    assert "media" in out.report.dropped[0][1]
    assert out.report.truncated == [2]
    media = qwen_processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert (
        int((out["input_ids"] == media).sum()) == int(out["image_grid_thw"].prod(dim=1).sum()) // 4
    )


def test_fixed_length_padding_for_pipeline_parallelism(qwen_processor):
    out = qwen2_5_collate_fn(
        [GOOD], qwen_processor, max_length=80, pad_to_max_length=True, shift=False
    )
    assert out["input_ids"].shape == (1, 80)
    assert (
        out["input_ids"][0, out["attention_mask"][0] == 0] == qwen_processor.tokenizer.pad_token_id
    ).all()


@pytest.mark.parametrize(
    ("build", "opens", "closes"),
    [
        (testing.qwen2_5_vl_processor, ["<|vision_start|>"], ["<|vision_end|>"]),
        (
            testing.qwen3_omni_processor,
            ["<|vision_start|>", "<|audio_start|>"],
            ["<|vision_end|>", "<|audio_end|>"],
        ),
        (
            testing.kimi_vl_processor,
            ["<|media_start|>", "<|media_begin|>"],
            ["<|media_end|>", "<|media_end|>"],
        ),
        (testing.phi4_multimodal_processor, [], []),
    ],
)
def test_media_block_delimiters_per_family(build, opens, closes):
    processor = build()
    placeholders, open_ids, close_ids = media_block_ids(processor)
    tokenizer = processor.tokenizer
    assert tokenizer.convert_ids_to_tokens(open_ids) == opens
    assert tokenizer.convert_ids_to_tokens(close_ids) == closes
    assert placeholders and tokenizer.convert_tokens_to_ids(processor.image_token) in placeholders
    assert not set(placeholders) & (set(open_ids) | set(close_ids))


def _cut_just_past_last_placeholder(processor, collate, example, placeholder: str) -> None:
    """With max_length one past the last placeholder, the block's closing delimiter would
    be cut: the sample is dropped (media blocks are kept or dropped whole)."""
    full = collate([example], processor, shift=False)
    ids = full["input_ids"][0].tolist()
    pad = processor.tokenizer.convert_tokens_to_ids(placeholder)
    limit = max(i for i, t in enumerate(ids) if t == pad) + 1
    assert limit < len(ids)
    batch = collate(
        [example, GOOD_TEXT], processor, shift=False, max_length=limit, on_overflow="truncate"
    )
    assert [i for i, _ in batch.report.dropped] == [0]
    assert "media" in batch.report.dropped[0][1]


GOOD_TEXT = {
    "conversation": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "ok"}]
}


def test_truncation_keeps_qwen_vision_blocks_whole(qwen_processor):
    example = one_turn({"type": "image", "image": make_image()}, "what?", reply="word " * 30)
    _cut_just_past_last_placeholder(qwen_processor, qwen2_5_collate_fn, example, "<|image_pad|>")


def test_truncation_keeps_kimi_media_blocks_whole():
    from vlm_collate import kimi_vl_collate_fn

    processor = testing.kimi_vl_processor()
    example = one_turn({"type": "image", "image": make_image()}, "what?", reply="word " * 30)
    _cut_just_past_last_placeholder(processor, kimi_vl_collate_fn, example, "<|media_pad|>")
