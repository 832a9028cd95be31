"""Bad input gets a clear error naming the sample; nothing is dropped or mislabelled silently."""

from __future__ import annotations

import io
import logging
import re
import threading

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import make_image
from vlm_collate import VLMCollator, _engine, expand_image_tokens, qwen2_5_collate_fn, reference
from vlm_collate.errors import CollateError, MediaError, SampleError
from vlm_collate.processor.tokens import token_id
from vlm_collate.testing import qwen2_5_vl_processor


def chat(reply: str = "Yes", *, images=(), question: str = "Is it blue?") -> dict:
    user = [{"type": "image", "image": im} for im in images] + [{"type": "text", "text": question}]
    return {
        "conversation": [
            {"role": "user", "content": user},
            {"role": "assistant", "content": reply},
        ]
    }


GOOD = chat()


@pytest.mark.parametrize(
    ("example", "needle"),
    [
        ({"text": "hi"}, "missing 'conversation'"),
        ({"conversation": "hello"}, "must be a list of messages"),
        ({"conversation": []}, "'conversation' is empty"),
        ({"conversation": [{"content": "x"}]}, "message 0: missing 'role'"),
        ({"conversation": [{"role": "user"}]}, "message 0: missing 'content'"),
        (
            {"conversation": [{"role": "user", "content": [{"type": "smell"}]}]},
            "unknown content item 'smell'",
        ),
        (
            {"conversation": [{"role": "user", "content": 3}]},
            "'content' must be a string or a list",
        ),
        (
            {"conversation": [{"role": "user", "content": [{"type": "text"}]}]},
            "needs a string 'text'",
        ),
        ({"conversation": [{"role": "user", "content": [{"type": "image"}]}]}, "needs its data"),
        ("not a dict", "must be a dict"),
    ],
)
def test_malformed_examples_name_the_sample_and_field(qwen_processor, example, needle):
    with pytest.raises(ValueError, match="sample 1") as err:
        qwen2_5_collate_fn([GOOD, example], qwen_processor)
    assert needle in str(err.value)


def test_empty_batch_is_an_error(qwen_processor):
    with pytest.raises(ValueError, match="non-empty list"):
        qwen2_5_collate_fn([], qwen_processor)


NO_ASSISTANT = {
    "conversation": [
        {
            "role": "user",
            "content": [{"type": "image", "image": make_image()}, {"type": "text", "text": "hi"}],
        }
    ]
}


def test_sample_without_assistant_turn_warns_and_is_reported(qwen_processor, caplog):
    with caplog.at_level(logging.WARNING, logger="vlm_collate"):
        out = qwen2_5_collate_fn([GOOD, NO_ASSISTANT], qwen_processor, shift=False)
    assert out.report.unlabeled == [1]
    assert (out["labels"][1] == -100).all() and (out["labels"][0] != -100).any()
    assert "no target tokens" in caplog.text


def test_sample_without_assistant_turn_raises_or_is_dropped(qwen_processor):
    with pytest.raises(ValueError, match="sample 1 has no assistant turn"):
        qwen2_5_collate_fn([GOOD, NO_ASSISTANT], qwen_processor, on_unlabeled="raise")
    out = qwen2_5_collate_fn(
        [GOOD, NO_ASSISTANT, chat(images=[make_image()])], qwen_processor, on_unlabeled="drop"
    )
    assert out["input_ids"].shape[0] == 2
    assert out.report.dropped == [(1, "no assistant turn")]
    # The dropped sample's image went with it: one image left.
    assert out["image_grid_thw"].shape[0] == 1


def test_image_errors_are_clear(qwen_processor, tmp_path):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG not really")
    cases = [
        (str(tmp_path / "missing.png"), "image file not found"),
        (str(corrupt), "not a readable image"),
        (b"garbage bytes", "cannot be decoded"),
        (np.zeros((0, 4, 3), dtype=np.uint8), "empty"),
        ("https://example.com/cat.png", "remote image URLs"),
    ]
    for value, needle in cases:
        with pytest.raises(MediaError, match="sample 1, image 0") as err:
            qwen2_5_collate_fn([GOOD, chat(images=[value])], qwen_processor)
        assert needle in str(err.value)


def test_odd_image_modes_and_forms_are_converted(qwen_processor, tmp_path):
    png = io.BytesIO()
    make_image(seed=3).save(png, format="PNG")
    path = tmp_path / "img.png"
    path.write_bytes(png.getvalue())
    import base64

    images = [
        make_image(mode="L"),
        make_image(mode="RGBA"),
        make_image().convert("P"),
        png.getvalue(),
        f"file://{path}",
        "data:image/png;base64," + base64.b64encode(png.getvalue()).decode(),
        np.asarray(make_image(seed=4)),
    ]
    out = qwen2_5_collate_fn([chat(images=images)], qwen_processor, shift=False)
    grid = out["image_grid_thw"]
    assert grid.shape == (len(images), 3)
    media = qwen_processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert int((out["input_ids"] == media).sum()) == int(grid.prod(dim=1).sum()) // 4


def test_placeholder_text_in_a_message_names_sample_and_message(qwen_processor):
    typed = chat(question="what is <|image_pad|> here?", images=[make_image()])
    with pytest.raises(
        SampleError,
        match=r"sample 1, message 0 \(user\): its text holds the media string '<\|image_pad\|>'",
    ):
        qwen2_5_collate_fn([GOOD, typed], qwen_processor)


def test_grid_mismatches_name_both_numbers():
    ids, mask = torch.tensor([[1, 9, 2]]), torch.ones(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="1 image placeholders .* describes 2 images"):
        expand_image_tokens(ids, mask, [[1, 2, 2], [1, 2, 2]], 9)
    with pytest.raises(
        ValueError,
        match=r"image 0 has grid \(t=1, h=3, w=4\).*not divisible by the merge kernel \(2, 2\)",
    ):
        expand_image_tokens(ids, mask, [[1, 3, 4]], 9)


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


ALPHABET = st.characters(codec="utf-8", exclude_categories=("Cs",))
CONTENT_ITEM = st.one_of(
    st.fixed_dictionaries({"type": st.just("text"), "text": st.text(ALPHABET, max_size=30)}),
    st.fixed_dictionaries({"type": st.just("image"), "image": st.just(make_image(16, 16))}),
    st.fixed_dictionaries({"type": st.sampled_from(["text", "image", "bogus"])}),
    st.integers(),
)
MESSAGE = st.one_of(
    st.fixed_dictionaries(
        {
            "role": st.sampled_from(["user", "assistant", "system", "tool", ""]),
            "content": st.one_of(
                st.text(ALPHABET, max_size=60), st.lists(CONTENT_ITEM, max_size=3), st.none()
            ),
        }
    ),
    st.dictionaries(st.sampled_from(["role", "content", "x"]), st.text(max_size=3), max_size=2),
)
EXAMPLE = st.one_of(
    st.fixed_dictionaries({"conversation": st.lists(MESSAGE, max_size=4)}),
    st.fixed_dictionaries({"conversation": st.text(max_size=3)}),
    st.none(),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(EXAMPLE, min_size=1, max_size=3))
def test_fuzzed_conversations_give_a_valid_batch_or_a_clear_error(qwen_processor, examples):
    try:
        out = qwen2_5_collate_fn(examples, qwen_processor, shift=False)
    except CollateError as err:  # only the library's errors, each naming a sample
        assert re.search(r"samples? \[?\d", str(err)), str(err)
        return
    labels, ids, mask = out["labels"], out["input_ids"], out["attention_mask"]
    assert labels.shape == ids.shape == mask.shape
    targets = labels != -100
    assert (mask[targets] == 1).all()
    assert torch.equal(labels[targets], ids[targets])
    assert out.report.target_tokens == int(targets.sum())


def test_dataloader_workers_give_identical_batches(qwen_processor):
    data = [chat(reply=f"reply {i}", images=[make_image(seed=i)] * (i % 2)) for i in range(8)]
    collator = VLMCollator(qwen_processor)
    single = list(torch.utils.data.DataLoader(data, batch_size=4, collate_fn=collator))
    workers = list(
        torch.utils.data.DataLoader(
            data,
            batch_size=4,
            collate_fn=collator,
            num_workers=2,
            persistent_workers=True,
            multiprocessing_context="spawn",  # the collator is pickled into each worker
        )
    )
    assert len(single) == len(workers) == 2
    for a, b in zip(single, workers):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key


def test_engine_calls_from_threads_agree_with_the_reference():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 4, size=(8, 4000)).astype(np.int64)
    mask = np.ones_like(ids)
    starts, ends = [[1, 2]], [[3]]
    want = reference.labels_from_markers(ids, mask, starts, ends)[0]
    results: list = [None] * 4

    def work(k: int) -> None:
        results[k] = _engine.labels_from_markers(ids, mask, starts, ends)[0].tolist()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r == want for r in results)
