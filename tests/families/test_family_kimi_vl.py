"""kimi_vl_collate_fn on the Kimi-VL test stand-in processor (real Kimi K2.5 image processor)."""

from __future__ import annotations

import pickle

import pytest
import torch

from family_checks import (
    IGNORE,
    assert_exact_labels,
    assistant,
    label_cases,
    numbered_image,
    token_count,
    user,
)
from vlm_collate import kimi_vl_collate_fn
from vlm_collate.testing import KimiVLStandIn, kimi_vl_processor


@pytest.fixture(scope="module")
def processor() -> KimiVLStandIn:
    return kimi_vl_processor()


@pytest.fixture(scope="module")
def ids(processor) -> dict[str, int]:
    tok = processor.tokenizer
    return {t: tok.convert_tokens_to_ids(t) for t in ("<|media_pad|>", "[BOS]", "[PAD]")}


@pytest.fixture(scope="module")
def cases() -> list[list[dict]]:
    return label_cases(numbered_image)


@pytest.fixture(scope="module")
def unshifted(processor, cases):
    return kimi_vl_collate_fn([{"conversation": c} for c in cases], processor, shift=False)


def test_labels_match_offset_ground_truth(processor, cases, unshifted, ids):
    assert_exact_labels(unshifted, processor, cases, expanded={ids["<|media_pad|>"]})


def test_keys_shapes_dtypes(unshifted, cases):
    b, n = len(cases), 4
    assert set(unshifted) == {
        "input_ids",
        "attention_mask",
        "labels",
        "pixel_values",
        "image_grid_hws",
        "n_images_per_sample",
    }
    for key in ("input_ids", "attention_mask", "labels"):
        assert unshifted[key].dtype == torch.int64 and unshifted[key].shape[0] == b
    assert unshifted["image_grid_hws"].shape == (n, 2)
    assert unshifted["pixel_values"].shape[1:] == (3, 14, 14)
    assert unshifted["pixel_values"].shape[0] == int(unshifted["image_grid_hws"].prod(-1).sum())
    assert unshifted["n_images_per_sample"].tolist() == [1, 0, 1, 0, 0, 2]


def test_placeholders_match_grids_in_order(unshifted, ids):
    per_image = (unshifted["image_grid_hws"].prod(-1) // 4).tolist()
    expected = [per_image[0], 0, per_image[1], 0, 0, per_image[2] + per_image[3]]
    assert token_count(unshifted, ids["<|media_pad|>"]) == expected


def test_no_special_tokens_added(unshifted, ids):
    assert token_count(unshifted, ids["[BOS]"]) == [0] * unshifted["input_ids"].shape[0]


def test_max_length_pads_to_exactly_that_length(processor, cases, ids):
    batch = kimi_vl_collate_fn([{"conversation": cases[1]}], processor, max_length=96)
    assert batch["input_ids"].shape == (1, 96)  # exactly max_length, shifted or not
    assert batch["input_ids"][0, -1] == ids["[PAD]"] and batch["labels"][0, -1] == IGNORE
    batch = kimi_vl_collate_fn([{"conversation": cases[1]}], processor, max_length=96, shift=False)
    assert batch["input_ids"].shape == (1, 96)


def test_max_length_never_cuts_an_image(processor, cases, ids):
    examples = [{"conversation": cases[0]}, {"conversation": cases[1]}]
    with pytest.raises(ValueError, match="sample 0 has .* tokens, more than max_length=20"):
        kimi_vl_collate_fn(examples, processor, max_length=20)
    batch = kimi_vl_collate_fn(examples, processor, max_length=20, on_overflow="truncate")
    assert batch.report.dropped and batch.report.dropped[0][0] == 0
    assert "pixel_values" not in batch and batch["input_ids"].shape == (1, 20)


def test_stand_in_pickles(processor):
    clone = pickle.loads(pickle.dumps(processor))
    conversation = [user(numbered_image(0), "Hi"), assistant("Hello")]
    a = kimi_vl_collate_fn([{"conversation": conversation}], processor)
    b = kimi_vl_collate_fn([{"conversation": conversation}], clone)
    assert torch.equal(a["input_ids"], b["input_ids"]) and torch.equal(a["labels"], b["labels"])
