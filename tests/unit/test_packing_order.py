"""Packing without the pixel copy: the fast path allocates ``pixel_values`` and the packer
writes it with the documents in its order, decided from the final lengths (closing tokens
appended and truncation included) before any pixel is written.
The packed batch is the one the reorder path (the inner batch in sample order, every
pixel row copied into packed order) builds, key for key; in a DataLoader worker the
packed pixels are in shared memory."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from helpers import make_image, one_turn
from vlm_collate import PackedCollator, VLMCollator, engine
from vlm_collate.errors import CollateError
from vlm_collate.packing.collator import _group_rows, packed_batch
from vlm_collate.pipeline import fast_path
from vlm_collate.pipeline.fast_path import BUFFERS, packing_order
from vlm_collate.testing.families import glm4v_processor

MAX_LENGTH = 256


def _examples() -> list[dict]:
    """Seven documents of different lengths, with 0-3 images of several sizes each, so
    the packed order differs from the input order and images change places."""
    sizes = [(), (56, 84), (28,), (), (112, 56, 28), (84,), (56,)]
    words = [60, 5, 40, 15, 10, 80, 25]
    return [
        one_turn(
            "Describe " + "this picture carefully " * (w // 3),
            reply=f"Answer {i}: " + "blue " * w,
            images=[make_image(s, s + 28, seed=10 * i + k) for k, s in enumerate(sides)],
        )
        for i, (sides, w) in enumerate(zip(sizes, words))
    ]


def _assert_same(got, expected) -> None:
    assert set(got) == set(expected)
    for key, value in expected.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(got[key], value), key
        else:
            assert got[key] == value, key
    assert got.report.documents == expected.report.documents


@pytest.fixture(scope="module")
def collator(qwen_processor):
    return PackedCollator(VLMCollator(qwen_processor), max_length=MAX_LENGTH)


def _reorder_path(collator, examples):
    """The batch as packing built it before: inner batch in sample order, then a copy."""
    return packed_batch(collator, examples, collator.inner(examples))


def test_packed_batch_equals_the_reorder_path(collator):
    examples = _examples()
    expected = _reorder_path(collator, examples)
    order = [d[0] for d in expected.report.documents]
    assert order != sorted(order)  # the packer does move documents
    assert len(expected["image_grid_thw"]) == 8
    got = collator(examples)
    _assert_same(got, expected)


def test_no_pixel_is_copied_the_packer_writes_them_in_its_order(collator):
    examples = _examples()
    with packing_order() as deferred:
        inner = collator.inner(examples)
        assert len(deferred.deferred) == 1  # allocated, not written yet
        address = inner["pixel_values"].data_ptr()
        packed = packed_batch(collator, examples, inner, deferred)
    assert not deferred.deferred  # written by packed_batch
    assert packed["pixel_values"].data_ptr() == address
    # The inner pixels are in packed order, the inner grids in sample order.
    _assert_same(packed, _reorder_path(collator, examples))


def test_a_different_written_order_is_reordered_right(collator):
    # Pixels written in another order than the final one are still gathered into
    # packed order.
    examples = _examples()
    reverse = np.arange(len(examples))[::-1].copy()
    with packing_order() as deferred:
        inner = collator.inner(examples)
        assert deferred.fill(inner["pixel_values"], reverse).tolist() == reverse.tolist()
    packed = packed_batch(collator, examples, inner, reverse)
    _assert_same(packed, _reorder_path(collator, examples))


def test_pixels_left_unwritten_are_never_returned(collator):
    examples = _examples()
    with packing_order() as deferred:
        inner = collator.inner(examples)
        view = inner["pixel_values"][1:]  # not the tensor the fast path made, its memory
        with pytest.raises(CollateError, match="not written yet"):
            deferred.fill(view, np.arange(len(examples)))
    # Not a tensor the fast path deferred: nothing to write, in sample order.
    assert deferred.fill(torch.zeros(3, 4), np.arange(len(examples))) is None


def test_lengths_changed_after_encoding_still_need_no_copy(monkeypatch):
    """GLM-4.1V's rows get their closing token appended after the encoding (one more
    token each), so the encoding's lengths pack in another order than the final ones:
    the order decided at encoding time (as before) would have been wrong and packing
    would have copied every pixel. The packer writes the pixels in the final order."""
    processor = glm4v_processor()
    examples = [
        one_turn(
            "Describe this " * k,
            reply="blue " * (3 * k),
            images=[make_image(56, 56 + 28 * (k % 3), seed=k)],
        )
        for k in range(1, 7)
    ]
    max_length = 72
    encoded = []
    original = fast_path.fast_encoding

    def spy(*args, **kwargs):
        result = original(*args, **kwargs)
        encoded.append(result)
        return result

    monkeypatch.setattr(fast_path, "fast_encoding", spy)
    packed = PackedCollator(VLMCollator(processor), max_length=max_length)(examples)
    (result,) = encoded
    encoded_lengths = result["attention_mask"].sum(dim=1).numpy()
    final_order = [d[0] for d in packed.report.documents]
    final_lengths = [d[3] for d in sorted(packed.report.documents)]
    assert final_lengths == (encoded_lengths + 1).tolist()  # one closing token appended
    at_encoding = engine.pack_bins(encoded_lengths, max_length, "best_fit")[0].tolist()
    assert at_encoding != final_order  # the scenario: the order changed after encoding
    assert packed["pixel_values"].data_ptr() == result["pixel_values"].data_ptr()  # no copy
    monkeypatch.undo()
    slow = PackedCollator(VLMCollator(processor, fast_path=False), max_length=max_length)
    _assert_same(packed, slow(examples))


def test_the_processor_path_packs_the_same_batch(qwen_processor, collator):
    examples = _examples()
    slow = PackedCollator(VLMCollator(qwen_processor, fast_path=False), max_length=MAX_LENGTH)
    _assert_same(collator(examples), slow(examples))


class _SharedReport:
    def __init__(self, collator):
        self.collator = collator

    def __call__(self, examples):
        batch = dict(self.collator(examples))
        batch["was_shared"] = torch.tensor(batch["pixel_values"].is_shared())
        return batch


def test_packed_pixels_are_in_shared_memory_in_a_worker(collator):
    examples = _examples()
    loader = DataLoader(
        examples,
        batch_size=len(examples),
        num_workers=1,
        collate_fn=_SharedReport(collator),
        multiprocessing_context="fork",
    )
    (batch,) = list(loader)
    assert batch.pop("was_shared").item()
    expected = _reorder_path(collator, examples)
    assert torch.equal(batch["pixel_values"], expected["pixel_values"])


def test_packed_pixels_reuse_the_output_pool_while_the_previous_batch_is_held(collator):
    """``for batch in loader`` holds the previous batch while the next is made: the pixels
    of the batch before it are written into the storage that batch let go (the pool keeps
    two storages per thread; the packer's small reordered tensors, e.g. the grids, take
    none of them)."""
    examples = _examples()
    BUFFERS.clear()
    addresses = []
    held = None
    for _ in range(4):
        batch = collator(examples)
        addresses.append(batch["pixel_values"].untyped_storage().data_ptr())
        if held is not None:
            assert addresses[-1] != held["pixel_values"].untyped_storage().data_ptr()
        held = batch  # the previous batch stays referenced while the next one is made
        del batch
        gc.collect()
    assert addresses[2] == addresses[0] and addresses[3] == addresses[1]


def test_group_rows_takes_each_documents_rows_in_order():
    """The vectorised row index equals the groups taken one by one (empty groups too)."""
    rng = np.random.default_rng(0)
    for _ in range(500):
        n = int(rng.integers(0, 10))
        counts, order = rng.integers(0, 4, n).astype(np.int64), rng.permutation(n)
        starts = np.concatenate([[0], np.cumsum(counts)])
        expected = [r for d in order for r in range(starts[d], starts[d + 1])]
        assert _group_rows(counts, order).tolist() == expected
