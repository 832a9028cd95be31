"""Label tests on the real Qwen2 vocabulary, checked against character-offset ground truth."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import make_image
from vlm_collate import build_labels, qwen2_5_collate_fn
from vlm_collate.processor.markers import markers_for
from vlm_collate.testing import offset_targets

WORDS = [
    "the",
    "cat",
    "A",
    "Yes",
    "2",
    "blue",
    "sky",
    "ünïcødé",
    "数字",
    "😀",
    "x=1;",
    "Yes.",
    "{}",
]
SEPARATORS = [" ", "", "\n", ", ", "  "]


@st.composite
def texts(draw, allow_empty: bool = False) -> str:
    n = draw(st.integers(0 if allow_empty else 1, 6))
    parts = [draw(st.sampled_from(WORDS)) for _ in range(n)]
    seps = [draw(st.sampled_from(SEPARATORS)) for _ in range(max(n - 1, 0))]
    text = "".join(p + s for p, s in zip(parts, [*seps, ""]))
    lead = draw(st.sampled_from(["", "", "", "\n", " ", "\n\n"]))
    return lead + text if text or not allow_empty else text


@st.composite
def conversations(draw):
    messages = []
    if draw(st.booleans()):
        messages.append({"role": "system", "content": draw(texts())})
    for _ in range(draw(st.integers(1, 3))):
        question = draw(texts())
        user = question
        if draw(st.booleans()):
            user = [{"type": "text", "text": question}]
            user += [
                {"type": "image", "image": make_image()} for _ in range(draw(st.integers(0, 2)))
            ]
        messages.append({"role": "user", "content": user})
        # Prompt echo: the reply repeats a word of the question.
        echo = draw(st.sampled_from(question.split() or ["A"]))
        reply = draw(st.one_of(texts(allow_empty=True), st.just(echo)))
        if draw(st.booleans()):
            reply = [{"type": "text", "text": t} for t in [reply, draw(texts())]]
        messages.append({"role": "assistant", "content": reply})
    return messages


def padded(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


def expected_labels(ids: list[int], targets: list[bool], width: int) -> list[int]:
    row = [t if keep else -100 for t, keep in zip(ids, targets)]
    return row + [-100] * (width - len(row))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(conversations(), min_size=1, max_size=4))
def test_build_labels_matches_offsets(qwen_processor, batch):
    truth = [offset_targets(qwen_processor, c) for c in batch]
    ids, mask = padded([t[0] for t in truth], qwen_processor.tokenizer.pad_token_id)
    labels = build_labels(ids, batch, qwen_processor, attention_mask=mask)
    assert labels.shape == ids.shape and labels.dtype == torch.long
    for row, (tokens, targets) in zip(labels.tolist(), truth):
        assert row == expected_labels(tokens, targets, ids.shape[1])


CASES = {
    "prompt_echo": [
        {"role": "user", "content": "Answer with A or B. A"},
        {"role": "assistant", "content": "A"},
    ],
    "newline_start": [
        {"role": "user", "content": "Say hi"},
        {"role": "assistant", "content": "\nHi there"},
    ],
    "multi_part": [
        {"role": "user", "content": "Two parts"},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "first "}, {"type": "text", "text": "second"}],
        },
    ],
    "empty_reply": [
        {"role": "user", "content": "Say nothing"},
        {"role": "assistant", "content": ""},
    ],
    "multi_turn_with_system": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "2+0?"},
        {"role": "assistant", "content": "2"},
        {"role": "user", "content": "Yes or no: is 2 even? Yes"},
        {"role": "assistant", "content": "Yes"},
    ],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_named_cases(qwen_processor, name):
    conversation = CASES[name]
    tokens, targets = offset_targets(qwen_processor, conversation)
    ids, mask = padded([tokens], 0)
    labels = build_labels(ids, [conversation], qwen_processor, attention_mask=mask)[0].tolist()
    assert labels == expected_labels(tokens, targets, len(tokens))
    decoded = qwen_processor.tokenizer.decode([t for t in labels if t != -100])
    replies = [m["content"] for m in conversation if m["role"] == "assistant"]
    texts_ = ["".join(p["text"] for p in r) if isinstance(r, list) else r for r in replies]
    expected = "".join(t + "<|im_end|>" for t in texts_)
    # A reply starting with a newline shares its first token with the header's newline.
    merged = "\n" if name == "newline_start" else ""
    assert decoded == merged + expected


def test_markers_are_derived_from_the_template(qwen_processor):
    markers = markers_for(qwen_processor)
    tok = qwen_processor.tokenizer
    im_start, im_end = tok.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    assistant = tok.encode("assistant", add_special_tokens=False)
    assert [im_start, *assistant] in markers.starts
    assert [im_start, *assistant, *tok.encode("\n", add_special_tokens=False)] in markers.starts
    assert markers.ends == [[im_end]]
    assert tok.convert_tokens_to_ids("<|image_pad|>") in markers.ignore_ids


def collapse_media(ids: list[int], labels: list[int], media_id: int) -> tuple[list[int], list[int]]:
    """Ids and labels with each run of expanded media tokens folded to one placeholder."""
    out_ids, out_labels = [], []
    for t, lab in zip(ids, labels):
        if t == media_id and out_ids and out_ids[-1] == media_id:
            assert lab == -100
            continue
        out_ids.append(t)
        out_labels.append(lab)
    return out_ids, out_labels


def image_conversation(n_images: int, reply: str) -> list[dict]:
    content = [{"type": "image", "image": make_image(seed=k)} for k in range(n_images)]
    return [
        {"role": "user", "content": [*content, {"type": "text", "text": f"Describe {reply}"}]},
        {"role": "assistant", "content": reply},
        {"role": "user", "content": "And again?"},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": reply}, {"type": "text", "text": "!"}],
        },
    ]


def test_collate_labels_with_images_match_offsets(qwen_processor):
    batch = [
        image_conversation(2, "A"),
        [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Yes"}],
        image_conversation(1, "\nblue sky"),
    ]
    out = qwen2_5_collate_fn([{"conversation": c} for c in batch], qwen_processor, shift=False)
    media_id = qwen_processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    grid = out["image_grid_thw"]
    assert grid.shape == (3, 3)
    expanded = (out["input_ids"] == media_id).sum(dim=1).tolist()
    per_image = (grid.prod(dim=1) // 4).tolist()
    assert expanded == [per_image[0] + per_image[1], 0, per_image[2]]
    for k, conversation in enumerate(batch):
        n = int(out["attention_mask"][k].sum())
        ids, labels = collapse_media(
            out["input_ids"][k, :n].tolist(), out["labels"][k, :n].tolist(), media_id
        )
        tokens, targets = offset_targets(qwen_processor, conversation)
        assert ids == tokens
        assert labels == expected_labels(tokens, targets, len(tokens))
        assert (out["labels"][k, n:] == -100).all()


def test_shift_is_applied_once_by_default(qwen_processor):
    examples = [
        {"conversation": image_conversation(1, "Yes")},
        {"conversation": CASES["prompt_echo"]},
    ]
    plain = qwen2_5_collate_fn(examples, qwen_processor, shift=False)
    shifted = qwen2_5_collate_fn(examples, qwen_processor)
    assert torch.equal(shifted["labels"], plain["labels"][:, 1:])
    assert torch.equal(shifted["input_ids"], plain["input_ids"][:, :-1])
    assert torch.equal(shifted["attention_mask"], plain["attention_mask"][:, :-1])
    assert torch.equal(shifted["pixel_values"], plain["pixel_values"])
    assert shifted["labels"].shape == shifted["input_ids"].shape


def test_text_only_sample_in_an_image_batch_and_padding_never_labelled(qwen_processor):
    examples = [
        {"conversation": CASES["empty_reply"]},
        {"conversation": image_conversation(1, "cat")},
    ]
    out = qwen2_5_collate_fn(examples, qwen_processor, shift=False, pad_to_multiple_of=64)
    assert out["input_ids"].shape[1] % 64 == 0
    assert ((out["attention_mask"] == 0) <= (out["labels"] == -100)).all()
    assert out.report.samples == 2 and out.report.target_tokens == int(
        (out["labels"] != -100).sum()
    )
    assert np.array_equal(
        out["pixel_values"].shape[:1], [int(out["image_grid_thw"].prod(dim=1).sum())]
    )


def test_without_a_mask_only_the_padded_end_is_padding(qwen_tokenizer):
    from vlm_collate.pipeline.labels import _mask_for
    from vlm_collate.processor.profile import profile_of

    pad = qwen_tokenizer.pad_token_id
    ids = np.array([[5, pad, 6, pad, pad], [7, 8, 9, 10, 11], [pad, pad, pad, pad, pad]])
    profile = profile_of(qwen_tokenizer)
    assert _mask_for(ids, None, profile).tolist() == [
        [1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1],
        [0, 0, 0, 0, 0],
    ]
    # When pad closes turns (pad == eos), the run's first token is the row's own.
    assert _mask_for(ids, None, profile, keep_first_pad=True).tolist() == [
        [1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1],
        [1, 0, 0, 0, 0],
    ]


def test_unknown_reasoning_option_is_refused(qwen_processor):
    from vlm_collate.errors import OptionError

    ids = torch.tensor([[1, 2, 3]])
    with pytest.raises(OptionError, match="reasoning must be"):
        build_labels(ids, [CASES["prompt_echo"]], qwen_processor, reasoning="drop")
