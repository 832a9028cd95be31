"""kimi_k25_vl_collate_fn on transformers' native Kimi_K25Processor and on the test
stand-in of the original remote-code processor (one placeholder per image)."""

from __future__ import annotations

from types import SimpleNamespace

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
from vlm_collate import kimi_k25_vl_collate_fn
from vlm_collate.families.kimi_k25 import media_token_id
from vlm_collate.testing import (
    kimi_k25_processor,
    kimi_k25_remote_processor,
    small_tokenizer,
)

BUILDERS = {"native": kimi_k25_processor, "remote": kimi_k25_remote_processor}


@pytest.fixture(scope="module")
def processors() -> dict:
    return {name: build() for name, build in BUILDERS.items()}


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def processor(request, processors):
    return processors[request.param]


@pytest.fixture(scope="module")
def cases() -> list[list[dict]]:
    return label_cases(numbered_image)


def collate(processor, conversations, **options):
    return kimi_k25_vl_collate_fn(
        [{"conversation": c} for c in conversations], processor, **options
    )


@pytest.fixture(scope="module")
def unshifted(processors, cases) -> dict:
    return {name: collate(p, cases, shift=False) for name, p in processors.items()}


def pad_id(processor) -> int:
    return processor.tokenizer.convert_tokens_to_ids("<|media_pad|>")


def test_media_token_id_is_resolved_not_hard_coded(processor):
    assert media_token_id(processor) == pad_id(processor)


def test_labels_match_offset_ground_truth(processor, cases, unshifted):
    batch = unshifted["native" if type(processor).__name__ == "Kimi_K25Processor" else "remote"]
    assert_exact_labels(batch, processor, cases, expanded={pad_id(processor)})


def test_remote_and_native_give_the_same_batch(unshifted):
    native, remote = unshifted["native"], unshifted["remote"]
    for key in ("input_ids", "attention_mask", "labels", "pixel_values", "grid_thws"):
        assert torch.equal(native[key], remote[key]), key


def test_keys_shapes_dtypes(unshifted, cases):
    common = {
        "input_ids",
        "attention_mask",
        "labels",
        "pixel_values",
        "grid_thws",
        "image_grid_hws",
        "n_images_per_sample",
    }
    assert set(unshifted["remote"]) == common
    assert set(unshifted["native"]) == common | {"image_grid_thw"}
    batch = unshifted["remote"]
    assert batch["grid_thws"].shape == (4, 3) and batch["grid_thws"].dtype == torch.int64
    assert torch.equal(batch["image_grid_hws"], batch["grid_thws"][:, 1:])
    assert batch["n_images_per_sample"].tolist() == [1, 0, 1, 0, 0, 2]
    assert batch["pixel_values"].shape == (int(batch["grid_thws"].prod(-1).sum()), 3, 14, 14)
    for key in ("input_ids", "attention_mask", "labels"):
        assert batch[key].dtype == torch.int64 and batch[key].shape[0] == len(cases)


def test_expanded_to_t_h_w_over_4_per_image(processor, unshifted):
    batch = unshifted["remote"]
    per_image = [t * (h // 2) * (w // 2) for t, h, w in batch["grid_thws"].tolist()]
    expected = [per_image[0], 0, per_image[1], 0, 0, per_image[2] + per_image[3]]
    assert token_count(batch, pad_id(processor)) == expected


def test_text_only_batch(processor, cases):
    batch = collate(processor, [cases[1], cases[3]])
    assert batch["n_images_per_sample"].tolist() == [0, 0]
    assert "pixel_values" not in batch and "grid_thws" not in batch


def test_max_length_pads_to_exactly_that_length(processor, cases):
    batch = collate(processor, [cases[0], cases[1]], max_length=128)
    assert batch["input_ids"].shape == (2, 128)
    assert batch["labels"][1, -1] == IGNORE


def test_truncation_never_cuts_an_image(processor, cases):
    long_text = [user(numbered_image(0), "word " * 60), assistant("reply " * 40)]
    fits = [user("Hi"), assistant("reply " * 40)]
    batch = collate(processor, [long_text, fits], max_length=48, on_overflow="truncate")
    assert batch["input_ids"].shape == (2, 48)
    assert batch.report.truncated == [0, 1]
    assert token_count(batch, pad_id(processor))[0] == int(batch["grid_thws"].prod(-1).sum()) // 4
    image_late = [user("word " * 60, numbered_image(0)), assistant("ok")]
    batch = collate(processor, [image_late, fits], max_length=48, on_overflow="truncate")
    assert [i for i, _ in batch.report.dropped] == [0] and "grid_thws" not in batch


def test_unknown_media_token_is_a_clear_error():
    tokenizer = small_tokenizer(["[UNK]", "[PAD]"], unk_token="[UNK]", pad_token="[PAD]")
    unk = tokenizer.unk_token_id
    for processor in (
        SimpleNamespace(tokenizer=tokenizer),
        SimpleNamespace(tokenizer=tokenizer, media_placeholder_token_id=unk),
    ):
        with pytest.raises(
            ValueError, match="'<\\|media_pad\\|>' is not in the tokenizer's vocabulary"
        ):
            media_token_id(processor)
        with pytest.raises(ValueError, match="not in the tokenizer's vocabulary"):
            kimi_k25_vl_collate_fn([{"conversation": [user("a"), assistant("b")]}], processor)


def test_collator_in_a_dataloader_with_workers(processors, cases):
    from torch.utils.data import DataLoader

    from vlm_collate import VLMCollator

    collator = VLMCollator(processors["remote"], max_length=160)
    loader = DataLoader(
        [{"conversation": c} for c in cases[:4]], batch_size=2, num_workers=2, collate_fn=collator
    )
    batches = list(loader)
    assert [b["input_ids"].shape for b in batches] == [(2, 160), (2, 160)]
    assert [b["n_images_per_sample"].tolist() for b in batches] == [[1, 0], [1, 0]]
