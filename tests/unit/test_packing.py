"""Packed batches: a tiny Qwen2.5-VL model on the CPU gives the same logits and loss on a
packed batch as on its documents one by one; every sample is placed once and whole, with
its media and labels; the length estimator and the packed batch sampler."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
from transformers.modeling_flash_attention_utils import prepare_fa_kwargs_from_position_ids

from helpers import image_item as image
from helpers import one_turn as conversation
from vlm_collate import LengthEstimator, PackedBatchSampler, PackedCollator, VLMCollator
from vlm_collate.engine import IGNORE_INDEX
from vlm_collate.errors import OptionError
from vlm_collate.testing import video
from vlm_collate.testing.tiny_models import tiny_qwen_vl_config


def text(t):
    return {"type": "text", "text": t}


POOL = [
    conversation(image(100, 60), text("what is here?"), image(60, 200, 1), reply="Two shapes."),
    conversation(text("only words " * 12), reply="Words, many of them."),
    conversation(text("and this one"), image(160, 112, 2), reply="A rectangle."),
    conversation({"type": "video", "video": video(4, 64, 96)}, text("what happens?")),
    conversation(text("hi"), reply="Hello!"),
    conversation(image(56, 56, 3), image(84, 140, 4), text("same?"), reply="No, different."),
    conversation(text("a longer question, " * 8), reply="A longer answer, " * 6),
    conversation(image(224, 168, 5), text("describe"), reply="A generated picture."),
]


@pytest.fixture(scope="module")
def alone(qwen_processor):
    """Each pool sample collated on its own (unshifted, no padding)."""
    single = VLMCollator(qwen_processor, shift=False)
    return [single([example]) for example in POOL]


def tiny_model(attention: str):
    torch.manual_seed(0)
    config = Qwen2_5_VLConfig(**tiny_qwen_vl_config(hidden_size=32, num_hidden_layers=2))
    config._attn_implementation = attention
    config.text_config._attn_implementation = attention
    return Qwen2_5_VLForConditionalGeneration(config).eval()


MODEL_KEYS = (
    "input_ids",
    "labels",
    "shift_labels",
    "position_ids",
    "pixel_values",
    "image_grid_thw",
    "pixel_values_videos",
    "video_grid_thw",
    "second_per_grid_ts",
    "mm_token_type_ids",
)


@pytest.mark.slow
@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("shift", [False, True])
def test_packed_batch_equals_documents_one_by_one(qwen_processor, alone, attention, shift):
    model = tiny_model(attention)
    samples = [0, 1, 2, 3, 4, 5]
    collator = PackedCollator(
        VLMCollator(qwen_processor), max_length=160, rope=model.config, shift=shift
    )
    batch = collator([POOL[i] for i in samples])
    assert batch["input_ids"].shape[0] >= 2  # several rows, several documents per row
    assert len(batch.report.documents) == len(samples)
    with torch.no_grad():
        assert batch["use_cache"] is False  # a cache would switch off per-document masking
        model.train()  # no dropout in this config; training mode as a trainer runs it
        packed = model(**batch)  # every key, as a trainer passes the batch
        model.eval()
        total, targets = 0.0, 0
        for index, row, start, n in batch.report.documents:
            doc = alone[samples[index]]
            out = model(
                **{k: v for k, v in doc.items() if k in MODEL_KEYS and k != "labels"},
                use_cache=False,
            )
            torch.testing.assert_close(
                packed.logits[row, start : start + n], out.logits[0, :n], atol=2e-5, rtol=1e-4
            )
            logits, labels = out.logits[0, :-1], doc["labels"][0, 1:]
            total += float(torch.nn.functional.cross_entropy(logits, labels, reduction="sum"))
            targets += int((labels != IGNORE_INDEX).sum())
    assert targets == batch.report.target_tokens
    assert abs(float(packed.loss) - total / targets) < 1e-5


def test_flash_attention_kwargs_follow_the_documents(qwen_processor):
    batch = PackedCollator(VLMCollator(qwen_processor), max_length=200, pad_to_multiple_of=64)(
        POOL[:5]
    )
    (cu, _), (longest, _) = prepare_fa_kwargs_from_position_ids(batch["position_ids"][0])
    assert torch.equal(batch["cu_seq_lens_q"], cu)
    assert batch["cu_seq_lens_q"] is batch["cu_seq_lens_k"]
    assert batch["max_length_q"] == batch["max_length_k"] == int(longest)
    rows, width = batch["input_ids"].shape
    assert width % 64 == 0 and int(batch["cu_seq_lens_q"][-1]) == rows * width
    assert batch["position_ids"].shape == (4, rows, width)
    assert batch["labels"].shape == batch["input_ids"].shape == batch["mm_token_type_ids"].shape


def test_fixed_width_and_options_are_checked(qwen_processor):
    collator = PackedCollator(qwen_processor, max_length=256, pad_to_max_length=True)
    batch = collator(POOL[:3])
    assert batch["input_ids"].shape[1] == 256 and batch["position_ids"].shape[-1] == 256
    with pytest.raises(OptionError, match="strategy"):
        PackedCollator(qwen_processor, max_length=64, strategy="worst_fit")
    with pytest.raises(OptionError, match="max_length"):
        PackedCollator(qwen_processor, max_length=1)
    with pytest.raises(OptionError, match="processor"):
        PackedCollator(lambda examples, processor: None, max_length=64)


def test_over_long_samples_follow_on_overflow(qwen_processor):
    collator = PackedCollator(VLMCollator(qwen_processor), max_length=40, on_overflow="drop")
    batch = collator(POOL[:5])
    dropped = {i for i, _ in batch.report.dropped}
    assert dropped and {d[0] for d in batch.report.documents} == set(range(5)) - dropped
    with pytest.raises(ValueError, match="more than max_length=40"):
        PackedCollator(VLMCollator(qwen_processor), max_length=40)(POOL[:5])


@pytest.mark.slow
@settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    picks=st.lists(st.integers(0, len(POOL) - 1), min_size=1, max_size=6),
    max_length=st.integers(130, 400),
    shift=st.booleans(),
    strategy=st.sampled_from(["best_fit", "first_fit"]),
)
def test_packing_invariants(qwen_processor, alone, picks, max_length, shift, strategy):
    collator = PackedCollator(
        VLMCollator(qwen_processor), max_length=max_length, shift=shift, strategy=strategy
    )
    batch = collator([POOL[i] for i in picks])
    docs = batch.report.documents
    # Every sample exactly once, rows within max_length.
    assert sorted(d[0] for d in docs) == list(range(len(picks)))
    ids, labels = batch["input_ids"], batch["labels"]
    widths = {}
    for index, row, start, n in docs:
        full = alone[picks[index]]["input_ids"].shape[1]
        assert n == full - (shift and start + full > ids.shape[1])
        widths[row] = widths.get(row, 0) + full
    assert max(widths.values()) <= max_length
    # Tokens, labels and media of each document are its own, in packed order.
    pixels, grids = [], []
    for index, row, start, n in docs:
        doc = alone[picks[index]]
        assert torch.equal(ids[row, start : start + n], doc["input_ids"][0, :n])
        own = doc["labels"][0]
        expected = own[1 : n + 1] if shift else own[:n].clone()
        if not shift:
            expected[0] = IGNORE_INDEX  # nothing predicts a document's first token
        assert torch.equal(labels[row, start : start + len(expected)], expected)
        if doc.get("pixel_values") is not None:
            pixels.append(doc["pixel_values"])
            grids.append(doc["image_grid_thw"])
    # Labels never cross a boundary: the column before each document's start predicts nothing.
    for _, row, start, _ in docs:
        if start > 0:
            # shifted: the column before predicts this document's first token; unshifted:
            # the model shifts, so this document's first label is the one to ignore.
            assert labels[row, start - 1 if shift else start] == IGNORE_INDEX
    if pixels:
        assert torch.equal(batch["pixel_values"], torch.cat(pixels))
        assert torch.equal(batch["image_grid_thw"], torch.cat(grids))
    else:
        assert "pixel_values" not in batch


# --------------------------------------------------------------------------- lengths, sampler


def test_length_estimator_equals_the_real_lengths(qwen_processor, alone):
    estimate = LengthEstimator(qwen_processor)
    assert [estimate(e) for e in POOL] == [int(d["attention_mask"].sum()) for d in alone]
    sizes = [(1000, 1000), (900, 300), (30, 30)]
    for w, h in sizes:
        example = conversation(image(w, h), text("size"))
        real = VLMCollator(qwen_processor, shift=False)([example])["attention_mask"].sum()
        assert estimate(example) == int(real)
    collator = PackedCollator(qwen_processor, max_length=400, length_estimator=estimate)
    assert collator(POOL[:4]).report.length_mismatches == []
    wrong = PackedCollator(qwen_processor, max_length=400, length_estimator=lambda e: 7)
    mismatches = wrong(POOL[:2]).report.length_mismatches
    assert [m[:2] for m in mismatches] == [(0, 7), (1, 7)]


LENGTHS = np.random.default_rng(0).integers(10, 500, size=203)


def test_sampler_batches_fit_and_are_deterministic():
    sampler = PackedBatchSampler(LENGTHS, 512, rows_per_batch=2, seed=3)
    batches = list(sampler)
    assert sorted(sum(batches, [])) == list(range(len(LENGTHS)))
    assert all(LENGTHS[b].sum() <= 2 * 512 for b in batches)
    assert batches == list(PackedBatchSampler(LENGTHS, 512, rows_per_batch=2, seed=3))
    assert batches == list(pickle.loads(pickle.dumps(sampler)))
    sampler.set_epoch(1)
    assert list(sampler) != batches
    fill = LENGTHS.sum() / (len(batches) * 2 * 512)
    assert fill > 0.9, fill


@pytest.mark.parametrize("drop_last", [True, False])
def test_sampler_shards_across_ranks(drop_last):
    shards = [
        list(PackedBatchSampler(LENGTHS, 512, num_replicas=3, rank=r, seed=1, drop_last=drop_last))
        for r in range(3)
    ]
    assert len({len(s) for s in shards}) == 1
    seen = [set(sum(s, [])) for s in shards]
    everything = set().union(*seen)
    if drop_last:
        assert all(not (a & b) for i, a in enumerate(seen) for b in seen[i + 1 :])
        assert len(everything) <= len(LENGTHS)
    else:
        assert everything == set(range(len(LENGTHS)))
    with pytest.raises(OptionError, match="rank"):
        PackedBatchSampler(LENGTHS, 512, num_replicas=2, rank=2)


def test_sampler_and_collator_in_a_dataloader_with_workers(qwen_processor):
    estimate = LengthEstimator(qwen_processor)
    lengths = [estimate(e) for e in POOL]
    sampler = PackedBatchSampler(lengths, 256, seed=0)
    collator = PackedCollator(qwen_processor, max_length=256, rope="auto")
    # Spawned workers receive both pickled; forked ones (below, faster) share them.
    restored = pickle.loads(pickle.dumps(collator))
    assert torch.equal(restored(POOL[:2])["position_ids"], collator(POOL[:2])["position_ids"])
    loader = torch.utils.data.DataLoader(
        POOL, batch_sampler=sampler, collate_fn=collator, num_workers=1
    )
    rows = [b["input_ids"].shape[0] for b in loader]
    assert rows == [1] * len(sampler)  # each batch is one bin: one row
