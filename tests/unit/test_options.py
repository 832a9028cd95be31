"""Collate options: checked when the collator is built, and what each one returns
(shift contract, returned length, padding side, label pad value, tensor type, the
unlabeled policy after truncation, the batch type, and the input formats)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from transformers import BatchFeature

from helpers import make_image, one_turn
from vlm_collate import (
    Batch,
    CollateOptions,
    OptionError,
    SampleError,
    VLMCollator,
    default_collate_fn,
    kimi_vl_collate_fn,
    nemotron_parse_collate_fn,
    qwen2_5_collate_fn,
    qwen3_omni_collate_fn,
)

IGNORE = -100


def chat(reply: str = "A red square.", *, question: str = "What is it?", images=()) -> dict:
    return one_turn(question, reply=reply, images=images)


@pytest.fixture(scope="module")
def examples():
    return [
        chat(images=[make_image(32, 32, seed=1)]),
        chat("Two blue circles side by side, and a third one below.", question="And here?"),
        chat("No.", question="Is it green?"),
    ]


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("options", "needle"),
    [
        ({"max_length": 100.5}, "max_length must be an integer, got 100.5"),
        ({"max_length": "100"}, "max_length must be an integer, got '100'"),
        ({"max_length": True}, "max_length must be an integer, got True"),
        ({"max_length": 1}, "max_length must be at least 2, got 1"),
        ({"max_length": 2**62}, "max_length must be at most"),
        ({"pad_to_multiple_of": 0}, "pad_to_multiple_of must be at least 1, got 0"),
        ({"pad_to_multiple_of": -8}, "pad_to_multiple_of must be at least 1, got -8"),
        ({"pad_to_multiple_of": 2.5}, "pad_to_multiple_of must be an integer, got 2.5"),
        ({"shift": "no"}, "shift must be True or False, got 'no'"),
        ({"shift": 0}, "shift must be True or False, got 0"),
        ({"pad_to_max_length": "yes"}, "pad_to_max_length must be True or False"),
        ({"on_overflow": "cut"}, "on_overflow must be one of 'error', 'drop', 'truncate'"),
        ({"on_unlabeled": "ignore"}, "on_unlabeled must be one of 'warn', 'raise', 'drop'"),
        ({"padding_side": "middle"}, "padding_side must be one of 'right', 'left', got 'middle'"),
        ({"return_tensors": "tf"}, "return_tensors must be one of 'pt', 'np', got 'tf'"),
        ({"label_pad_token_id": 1.5}, "label_pad_token_id must be an integer, got 1.5"),
        ({"base_dir": 3}, "base_dir must be a path"),
        ({"pad_to_max_length": True}, "pad_to_max_length=True needs max_length"),
        (
            {"pad_to_max_length": True, "max_length": 100, "pad_to_multiple_of": 64},
            "not a multiple of pad_to_multiple_of=64; pass max_length=128",
        ),
    ],
)
def test_bad_values_are_refused_when_the_collator_is_built(options, needle):
    with pytest.raises(OptionError) as err:
        CollateOptions(**options)
    assert needle in str(err.value)
    processor = object()  # never used: the collator refuses before it needs one
    with pytest.raises(OptionError) as err:
        VLMCollator(processor, qwen2_5_collate_fn, **options)
    assert needle in str(err.value)


def test_good_values_are_normalised():
    options = CollateOptions(max_length=np.int64(64), pad_to_multiple_of=8, shift=np.bool_(True))
    assert (options.max_length, options.shift) == (64, True)
    assert type(options.max_length) is int and type(options.shift) is bool
    assert options.replace(padding_side="left").padding_side == "left"
    with pytest.raises(OptionError, match="at least 2"):
        options.replace(max_length=0)


def test_unknown_option_names_are_refused_with_the_valid_ones():
    with pytest.raises(OptionError) as err:
        VLMCollator(object(), qwen2_5_collate_fn, shfit=False)
    message = str(err.value)
    assert "unknown option 'shfit'" in message
    for name in ("shift", "max_length", "padding_side", "return_tensors", "label_pad_token_id"):
        assert name in message
    # A family's own parameters are valid names for it, and only for it.
    VLMCollator(object(), qwen3_omni_collate_fn, use_audio_in_video=True)
    with pytest.raises(OptionError, match="valid options: .*use_audio_in_video"):
        VLMCollator(object(), qwen3_omni_collate_fn, use_audio_in_vid=True)
    with pytest.raises(OptionError, match="unknown option 'use_audio_in_video'"):
        VLMCollator(object(), qwen2_5_collate_fn, use_audio_in_video=True)
    with pytest.raises(OptionError, match="unknown collate function 'qwen'"):
        VLMCollator(object(), "qwen")


def test_collate_functions_refuse_unknown_and_bad_options(qwen_processor, examples):
    with pytest.raises(OptionError, match="unknown option 'shfit'"):
        qwen2_5_collate_fn(examples, qwen_processor, shfit=False)
    with pytest.raises(OptionError, match="max_length must be an integer, got '100'"):
        default_collate_fn(examples, qwen_processor, max_length="100")
    with pytest.raises(OptionError, match="use_audio_in_video must be True or False"):
        qwen3_omni_collate_fn(examples, qwen_processor, use_audio_in_video="yes")
    with pytest.raises(OptionError, match="pixel_dtype must be a floating torch dtype"):
        default_collate_fn(examples, qwen_processor, pixel_dtype="bf16")
    with pytest.raises(OptionError, match="nemotron_parse_collate_fn pads on the right only"):
        nemotron_parse_collate_fn(examples, qwen_processor, padding_side="left")


def test_functions_accept_an_options_object(qwen_processor, examples):
    options = CollateOptions(max_length=512, pad_to_multiple_of=16)  # shift=False: HF style
    batch = qwen2_5_collate_fn(examples, qwen_processor, options=options)
    assert "shift_labels" not in batch and batch["input_ids"].shape[1] % 16 == 0
    seed = qwen2_5_collate_fn(examples, qwen_processor, options=options, shift=True)
    assert torch.equal(seed["shift_labels"], seed["labels"])
    # A family's own max_length=None keeps the object's value.
    fixed = options.replace(pad_to_max_length=True)
    assert (
        default_collate_fn(examples[1:], qwen_processor, options=fixed)["input_ids"].shape[1] == 512
    )


def test_collator_accepts_an_options_object(qwen_processor, examples):
    options = CollateOptions(max_length=256, pad_to_multiple_of=16)
    collator = VLMCollator(qwen_processor, options=options)
    batch = collator(examples)
    assert batch["input_ids"].shape[1] % 16 == 0 and "shift_labels" not in batch
    assert pickle.loads(pickle.dumps(collator)).options == collator.options


# ---------------------------------------------------------------- shift contract


def test_collator_returns_hugging_face_style(qwen_processor, examples):
    batch = VLMCollator(qwen_processor)(examples)
    labels, ids = batch["labels"], batch["input_ids"]
    targets = labels != IGNORE
    assert labels.shape == ids.shape and "shift_labels" not in batch
    # Unshifted: every target sits on its own token.
    assert targets.any() and torch.equal(labels[targets], ids[targets])


def test_seed_functions_pre_shift_and_carry_shift_labels(qwen_processor, examples):
    plain = qwen2_5_collate_fn(examples, qwen_processor, shift=False)
    seed = qwen2_5_collate_fn(examples, qwen_processor)
    assert torch.equal(seed["labels"], plain["labels"][:, 1:])
    assert torch.equal(seed["shift_labels"], seed["labels"])
    for key in ("input_ids", "attention_mask", "mm_token_type_ids"):
        assert torch.equal(seed[key], plain[key][:, :-1]), key
    assert torch.equal(seed["pixel_values"], plain["pixel_values"])


# ---------------------------------------------------------------- returned length


@pytest.mark.parametrize("shift", [False, True])
@pytest.mark.parametrize("side", ["right", "left"])
def test_padding_options_give_the_returned_length(qwen_processor, examples, shift, side):
    natural = qwen2_5_collate_fn(examples, qwen_processor, shift=shift)["input_ids"].shape[1]
    for multiple in (8, 64):
        batch = qwen2_5_collate_fn(
            examples, qwen_processor, shift=shift, pad_to_multiple_of=multiple, padding_side=side
        )
        length = batch["input_ids"].shape[1]
        assert length % multiple == 0 and natural <= length < natural + multiple
    batch = qwen2_5_collate_fn(
        examples,
        qwen_processor,
        shift=shift,
        max_length=100,
        pad_to_max_length=True,
        padding_side=side,
    )
    token_axis = ("input_ids", "attention_mask", "mm_token_type_ids", "labels", "shift_labels")
    assert {batch[k].shape[1] for k in token_axis if k in batch} == {100}
    cut = qwen2_5_collate_fn(
        [chat("word " * 200)] + examples[1:],
        qwen_processor,
        shift=shift,
        max_length=40,
        pad_to_max_length=True,
        on_overflow="truncate",
    )
    assert cut["input_ids"].shape[1] == 40 and cut.report.truncated == [0]


# ---------------------------------------------------------------- padding side


@pytest.mark.parametrize("shift", [False, True])
def test_left_padding_moves_every_token_axis_tensor(qwen_processor, examples, shift):
    right = qwen2_5_collate_fn(examples, qwen_processor, shift=shift, pad_to_multiple_of=16)
    left = qwen2_5_collate_fn(
        examples, qwen_processor, shift=shift, pad_to_multiple_of=16, padding_side="left"
    )
    assert left.keys() == right.keys()
    width = right["input_ids"].shape[1]
    pad_id = qwen_processor.tokenizer.pad_token_id
    fills = {"input_ids": pad_id, "labels": IGNORE, "shift_labels": IGNORE}
    # Rows are laid out by the unshifted attended length (the shift drops one column).
    lengths = qwen2_5_collate_fn(examples, qwen_processor, shift=False)["attention_mask"].sum(1)
    if shift:  # the seed's shift drops the last column of the unshifted batch
        lengths = lengths.clamp(max=int(lengths.max()) - 1)
    for key in ("input_ids", "attention_mask", "mm_token_type_ids", "labels", "shift_labels"):
        if key not in right:
            continue
        assert left[key].shape == right[key].shape, key
        for b, n in enumerate(lengths.tolist()):
            assert torch.equal(left[key][b, width - n :], right[key][b, :n]), key
            assert (left[key][b, : width - n] == fills.get(key, 0)).all(), key
    assert torch.equal(left["pixel_values"], right["pixel_values"])
    # The attention mask of every left-padded row ends with attended tokens.
    assert (left["attention_mask"][:, -1] == 1).all()


# ---------------------------------------------------------------- label pad, tensors, type


def test_label_pad_token_id_marks_every_non_target(qwen_processor, examples):
    plain = qwen2_5_collate_fn(examples, qwen_processor, shift=False, pad_to_multiple_of=32)
    custom = qwen2_5_collate_fn(
        examples, qwen_processor, shift=False, pad_to_multiple_of=32, label_pad_token_id=-1
    )
    targets = plain["labels"] != IGNORE
    assert torch.equal(custom["labels"][targets], plain["labels"][targets])
    assert (custom["labels"][~targets] == -1).all() and (custom["labels"] != IGNORE).all()
    assert custom.report.target_tokens == plain.report.target_tokens


def test_numpy_tensors(qwen_processor, examples):
    pt = qwen2_5_collate_fn(examples, qwen_processor)
    np_batch = qwen2_5_collate_fn(examples, qwen_processor, return_tensors="np")
    assert np_batch.keys() == pt.keys()
    for key, value in np_batch.items():
        assert isinstance(value, np.ndarray), key
        assert np.array_equal(value, pt[key].float().numpy() if key == "pixel_values" else pt[key])
    batch = default_collate_fn(examples[1:], qwen_processor, return_tensors="np")
    assert batch["input_ids"].dtype == np.int64


def test_batch_is_a_batch_feature_with_report(qwen_processor, examples):
    batch = qwen2_5_collate_fn(examples, qwen_processor, shift=False)
    assert isinstance(batch, Batch) and isinstance(batch, BatchFeature)
    report = batch.report
    moved = batch.to("cpu", dtype=torch.bfloat16)
    assert moved is batch and moved.report is report
    assert moved["pixel_values"].dtype == torch.bfloat16 and moved["input_ids"].dtype == torch.long
    again = pickle.loads(pickle.dumps(batch))
    assert isinstance(again, Batch) and again.report == report
    assert torch.equal(again["labels"], batch["labels"])


# ---------------------------------------------------------------- unlabeled after truncation


def test_on_unlabeled_applies_after_truncation(qwen_processor, examples):
    # Sample 1's question fills max_length, so truncation removes its whole reply.
    cut_off = chat("The answer.", question="word " * 60)
    batch = [examples[2], cut_off]
    with pytest.raises(SampleError, match=r"sample 1: truncation at max_length=40 removed every"):
        qwen2_5_collate_fn(
            batch, qwen_processor, max_length=40, on_overflow="truncate", on_unlabeled="raise"
        )
    dropped = qwen2_5_collate_fn(
        batch, qwen_processor, max_length=40, on_overflow="truncate", on_unlabeled="drop"
    )
    assert dropped["input_ids"].shape[0] == 1 and [i for i, _ in dropped.report.dropped] == [1]
    assert "truncation" in dropped.report.dropped[0][1]
    kept = qwen2_5_collate_fn(batch, qwen_processor, max_length=40, on_overflow="truncate")
    assert kept["input_ids"].shape[0] == 2 and kept.report.unlabeled == [1]
    assert (kept["labels"][1] == IGNORE).all()


# ---------------------------------------------------------------- input formats


def test_messages_key_and_images_column(qwen_processor):
    image = make_image(32, 32, seed=3)
    ours = chat(images=[image])
    trl = {
        "messages": [
            {
                "role": "user",
                "content": [{"type": "image"}, {"type": "text", "text": "What is it?"}],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "A red square."}]},
        ],
        "images": [image],
    }
    a = qwen2_5_collate_fn([ours], qwen_processor, shift=False)
    b = qwen2_5_collate_fn([trl], qwen_processor, shift=False)
    for key in ("input_ids", "labels", "pixel_values", "image_grid_thw"):
        assert torch.equal(a[key], b[key]), key
    # datasets fills absent struct fields with None: still a placeholder.
    filled = {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "image", "text": None, "image": None},
                    {"type": "text", "text": "What is it?", "image": None},
                ],
            },
            {"role": "assistant", "content": [{"type": "text", "text": "A red square."}]},
        ],
        "images": [image],
    }
    assert torch.equal(
        qwen2_5_collate_fn([filled], qwen_processor, shift=False)["input_ids"], a["input_ids"]
    )


def test_images_column_count_mismatch_names_the_sample(qwen_processor):
    trl = {
        "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "?"}]},
            {"role": "assistant", "content": "x"},
        ],
        "images": [make_image(), make_image(seed=1)],
    }
    with pytest.raises(SampleError, match=r"sample 1: its 'images' column holds 2 image\(s\) but"):
        qwen2_5_collate_fn([chat(), trl], qwen_processor)
    both = {**chat(), "messages": chat()["conversation"]}
    with pytest.raises(SampleError, match="sample 0: has both 'conversation' and 'messages'"):
        qwen2_5_collate_fn([both], qwen_processor)
    with pytest.raises(SampleError, match="sample 0: missing 'conversation' or 'messages'"):
        kimi_vl_collate_fn([{"text": "hi"}], qwen_processor)


def test_reasoning_option_reaches_the_labels(qwen_processor):
    """Reasoning the reply supplies is a target by default and not with
    ``reasoning="exclude"``; the answer after it is a target either way."""
    tokenizer = qwen_processor.tokenizer
    reply = "<think>count the sides</think>A square."
    example = {
        "messages": [{"role": "user", "content": "Shape?"}, {"role": "assistant", "content": reply}]
    }

    def target_text(**options) -> str:
        batch = VLMCollator(qwen_processor, **options)([example])
        ids, labels = batch["input_ids"][0], batch["labels"][0]
        return tokenizer.decode(ids[labels != -100])

    assert "count the sides" in target_text()
    excluded = target_text(reasoning="exclude")
    assert "count the sides" not in excluded and "A square." in excluded
    with pytest.raises(OptionError, match="reasoning"):
        VLMCollator(qwen_processor, reasoning="skip")
