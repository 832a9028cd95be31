"""Published dataset formats read as published: each format's row (its schema as the
dataset card or loader code shows it) gives the same batch as the same data written in
the TRL shape, on Qwen2.5-VL, Gemma 3, Idefics3 (whose own image token is ``<image>``)
and Qwen3-Omni (audio); mismatches and unknown rows are errors naming the row."""

from __future__ import annotations

import base64
import io
import wave

import numpy as np
import pytest
import torch

import vlm_collate as vc
from helpers import make_image, png_bytes
from vlm_collate.errors import OptionError, SampleError
from vlm_collate.formats.conversation import conversation_of, format_of
from vlm_collate.testing import qwen2_5_vl_processor
from vlm_collate.testing.families import gemma3_processor, idefics3_processor
from vlm_collate.testing.standins import qwen3_omni_processor

IMG, IMG2 = make_image(64, 48, seed=1), make_image(48, 64, seed=2)
Q, A = "What is in the picture?", "A field of random pixels."
Q2, A2 = "And the colours?", "Every colour at once."


def trl(*messages, images=None, **rest):
    row = {"messages": list(messages), **rest}
    if images is not None:
        row["images"] = images
    return row


def u(*items):
    return {"role": "user", "content": [
        {"type": "text", "text": x} if isinstance(x, str) else x for x in items
    ]}  # fmt: skip


def a(text):
    return {"role": "assistant", "content": text}


IMAGE = {"type": "image"}

# Rows as published, each with the TRL row of the same data.
CASES = {
    # LLaVA-Instruct-150K / ShareGPT4V / LLaVA-OneVision-Data: id, image, conversations.
    "llava": (
        {
            "id": "000000033471",
            "image": IMG,
            "conversations": [
                {"from": "human", "value": f"<image>\n{Q}"},
                {"from": "gpt", "value": A},
                {"from": "human", "value": Q2},
                {"from": "gpt", "value": A2},
            ],
        },
        trl(u(IMAGE, "\n" + Q), a(A), {"role": "user", "content": Q2}, a(A2), images=[IMG]),
    ),
    # LLaMA-Factory's sharegpt format: images list, tags anywhere, a system column.
    "sharegpt": (
        {
            "conversations": [
                {"from": "human", "value": f"Compare <image> with <image>. {Q}"},
                {"from": "gpt", "value": A},
            ],
            "system": "You are a careful annotator.",
            "images": [IMG, IMG2],
        },
        trl(
            {"role": "system", "content": "You are a careful annotator."},
            u("Compare ", IMAGE, " with ", IMAGE, f". {Q}"),
            a(A),
            images=[IMG, IMG2],
        ),
    ),
    # ms-swift / LLaMA-Factory (openai-style): messages with tags, an images column.
    "tagged_messages": (
        {
            "messages": [
                {"role": "user", "content": f"<image><image>{Q}"},
                {"role": "assistant", "content": A},
            ],
            "images": [IMG, IMG2],
        },
        trl(u(IMAGE, IMAGE, Q), a(A), images=[IMG, IMG2]),
    ),
    # OpenAI chat: image_url parts with a data: URL, a text part.
    "openai": (
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": Q},
                        {
                            "type": "image_url",
                            "image_url": {
                                "url": "data:image/png;base64,"
                                + base64.b64encode(png_bytes(IMG)).decode()
                            },
                        },
                    ],
                },
                {"role": "assistant", "content": A},
            ]
        },
        trl(u(Q, IMAGE), a(A), images=[IMG]),
    ),
    # HuggingFaceM4/the_cauldron: images + texts [{user, assistant, source}].
    "cauldron": (
        {
            "images": [IMG],
            "texts": [
                {"user": Q, "assistant": A, "source": "ai2d"},
                {"user": Q2, "assistant": A2, "source": "ai2d"},
            ],
        },
        trl(u(IMAGE, Q), a(A), {"role": "user", "content": Q2}, a(A2), images=[IMG]),
    ),
    # TRL prompt/completion, conversational, with an images column.
    "prompt_completion": (
        {
            "images": [IMG],
            "prompt": [{"role": "user", "content": [IMAGE, {"type": "text", "text": Q}]}],
            "completion": [{"role": "assistant", "content": [{"type": "text", "text": A}]}],
        },
        trl(
            {"role": "user", "content": [IMAGE, {"type": "text", "text": Q}]},
            {"role": "assistant", "content": [{"type": "text", "text": A}]},
            images=[IMG],
        ),
    ),
    # TRL prompt/completion as strings: the images open the user turn.
    "prompt_completion_strings": (
        {"images": [IMG], "prompt": Q, "completion": A},
        trl(u(IMAGE, Q), a(A), images=[IMG]),
    ),
}

FORMAT_NAMES = {
    "llava": "sharegpt",
    "sharegpt": "sharegpt",
    "tagged_messages": "messages",
    "openai": "openai",
    "cauldron": "cauldron",
    "prompt_completion": "prompt_completion",
    "prompt_completion_strings": "prompt_completion",
}

PROCESSORS = {
    "qwen2_5_vl": qwen2_5_vl_processor,
    "gemma3": gemma3_processor,
    "idefics3": idefics3_processor,
}
_built: dict = {}


def processor(name):
    if name not in _built:
        _built[name] = PROCESSORS[name]()
    return _built[name]


def assert_same_batch(x, y):
    assert sorted(x.keys()) == sorted(y.keys())
    for key in x:
        if isinstance(x[key], torch.Tensor):
            assert torch.equal(x[key], y[key]), key
        else:
            assert x[key] == y[key], key


@pytest.mark.slow
@pytest.mark.parametrize("family", list(PROCESSORS))
@pytest.mark.parametrize("case", list(CASES))
def test_each_format_gives_the_trl_batch(family, case):
    row, same = CASES[case]
    collator = vc.VLMCollator(processor(family))
    batch = collator([row])
    assert_same_batch(batch, collator([same]))
    assert (batch["labels"] != -100).any()
    named = vc.VLMCollator(processor(family), format=FORMAT_NAMES[case])
    assert_same_batch(named([row]), batch)


def test_each_format_is_detected():
    for case, (row, same) in CASES.items():
        assert format_of(row) == FORMAT_NAMES[case], case
        assert format_of(same) == "messages"


def test_a_batch_mixes_formats(qwen_processor):
    collator = vc.VLMCollator(qwen_processor)
    rows = [CASES["llava"][0], CASES["openai"][0], CASES["cauldron"][0]]
    sames = [CASES["llava"][1], CASES["openai"][1], CASES["cauldron"][1]]
    assert_same_batch(collator(rows), collator(sames))


# --------------------------------------------------------------------------- audio


def wav_bytes(seconds: float = 1.0, seed: int = 0, rate: int = 16_000) -> bytes:
    rng = np.random.default_rng(seed)
    samples = (rng.uniform(-0.5, 0.5, int(seconds * rate)) * 32767).astype("<i2")
    out = io.BytesIO()
    with wave.open(out, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(samples.tobytes())
    return out.getvalue()


@pytest.mark.slow
def test_audio_formats_give_the_trl_batch_on_qwen3_omni():
    omni = qwen3_omni_processor()
    collator = vc.VLMCollator(omni)
    data = base64.b64encode(wav_bytes()).decode()
    same = trl(u({"type": "audio", "audio": data}, "What is said?"), a("Nothing."))
    rows = {
        "sharegpt": {
            "audios": [data],
            "conversations": [
                {"from": "human", "value": "<audio>What is said?"},
                {"from": "gpt", "value": "Nothing."},
            ],
        },
        "messages": {
            "audios": data,
            "messages": [
                {"role": "user", "content": "<audio>What is said?"},
                {"role": "assistant", "content": "Nothing."},
            ],
        },
        "openai": {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}},
                        {"type": "text", "text": "What is said?"},
                    ],
                },
                {"role": "assistant", "content": "Nothing."},
            ]
        },
    }
    expected = collator([same])
    assert "input_features" in expected
    for name, row in rows.items():
        assert format_of(row) == name
        assert_same_batch(collator([row]), expected)


# --------------------------------------------------------------------------- tools


def test_openai_tool_calls_with_content_none_render_as_an_empty_reply(qwen_processor):
    call = {"id": "c1", "type": "function",
            "function": {"name": "weather", "arguments": '{"city": "Paris"}'}}  # fmt: skip
    row = {
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            {"role": "assistant", "content": "Sunny."},
        ]
    }
    assert format_of(row) == "openai"
    conversation = conversation_of(row, 0)
    assert conversation[1] == {"role": "assistant", "content": "", "tool_calls": [call]}
    assert conversation[2]["tool_call_id"] == "c1"
    same = {"messages": [dict(m, content=m["content"] or "") for m in row["messages"]]}
    collator = vc.VLMCollator(qwen_processor)
    assert_same_batch(collator([row]), collator([same]))


# --------------------------------------------------------------------------- errors


def test_a_tag_count_mismatch_names_the_row_and_both_counts(qwen_processor):
    row = dict(CASES["llava"][0], image=[IMG, IMG2])
    with pytest.raises(
        SampleError,
        match=r"row '000000033471' \(sample 1 of the batch\): its "
        r"text holds 1 <image> tag\(s\) but its 'image' column holds 2",
    ):
        vc.VLMCollator(qwen_processor)([CASES["cauldron"][1], row])


def test_a_tag_mismatch_where_image_is_the_models_own_token():
    row = dict(CASES["tagged_messages"][0], images=[IMG])
    with pytest.raises(SampleError, match=r"sample 0: its text holds 2 <image> tag\(s\) but"):
        vc.VLMCollator(processor("idefics3"))([row])


def test_tags_without_media_in_the_row_stay_refused(qwen_processor):
    row = {"messages": [{"role": "user", "content": "<|vision_start|>hi"}, a("x")]}
    with pytest.raises(SampleError, match="media string"):
        vc.VLMCollator(qwen_processor)([row])


def test_a_row_of_no_format_lists_the_formats_and_its_keys(qwen_processor):
    with pytest.raises(SampleError) as err:
        vc.VLMCollator(qwen_processor)([{"id": "r7", "question": "hi", "answer": "x"}])
    message = str(err.value)
    assert message.startswith("row 'r7' (sample 0 of the batch): missing 'conversation'")
    for needed in ("sharegpt:", "cauldron:", "prompt_completion:", "openai:", "messages:"):
        assert needed in message
    assert "['answer', 'id', 'question']" in message


def test_a_named_format_refuses_rows_of_another(qwen_processor):
    with pytest.raises(SampleError, match="is not a 'cauldron' row"):
        vc.VLMCollator(qwen_processor, format="cauldron")([CASES["llava"][0]])
    with pytest.raises(OptionError, match="format must be one of"):
        vc.VLMCollator(qwen_processor, format="alpaca")
    with pytest.raises(OptionError, match="format must be one of"):
        vc.LengthEstimator(qwen_processor, format="alpaca")


def test_unknown_sharegpt_role_names_the_turn():
    row = {"conversations": [{"from": "narrator", "value": "x"}]}
    with pytest.raises(SampleError, match=r"sample 0, turn 0: unknown 'from' 'narrator'"):
        conversation_of(row, 0)


def test_length_estimator_reads_every_format(qwen_processor):
    estimate = vc.LengthEstimator(qwen_processor)
    for case, (row, same) in CASES.items():
        assert estimate(row) == estimate(same), case
    assert vc.LengthEstimator(qwen_processor, format="sharegpt")(CASES["llava"][0]) == estimate(
        CASES["llava"][1]
    )


def test_packed_collator_reads_every_format(qwen_processor):
    packed = vc.PackedCollator(qwen_processor, max_length=4096)
    rows = [CASES["llava"][0], CASES["cauldron"][0]]
    sames = [CASES["llava"][1], CASES["cauldron"][1]]
    assert torch.equal(packed(rows)["input_ids"], packed(sames)["input_ids"])
