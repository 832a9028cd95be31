"""Packing without the pixel copy: the fast path writes ``pixel_values`` with the
documents in the packer's order (decided from the lengths before any pixel is written).
The packed batch is the one the reorder path (the inner batch in sample order, every
pixel row copied into packed order) builds, key for key; in a DataLoader worker the
packed pixels are in shared memory."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from helpers import make_image, one_turn
from vlm_collate import PackedCollator, VLMCollator
from vlm_collate.packing.collator import packed_batch
from vlm_collate.pipeline.fast_path import packing_order

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


def test_no_pixel_is_copied_when_the_order_was_known(collator):
    examples = _examples()
    with packing_order(collator._order_of) as written:
        inner = collator.inner(examples)
    assert written.written is not None
    address = inner["pixel_values"].data_ptr()
    packed = packed_batch(collator, examples, inner, written.written)
    assert packed["pixel_values"].data_ptr() == address
    # The inner pixels are in packed order, the inner grids in sample order.
    _assert_same(packed, _reorder_path(collator, examples))


def test_a_different_written_order_is_reordered_right(collator):
    # Pixels written in another order than the final one (as when truncation changed a
    # length) are still gathered into packed order.
    examples = _examples()
    reverse = lambda lengths: np.arange(len(lengths))[::-1].copy()  # noqa: E731
    with packing_order(reverse) as written:
        inner = collator.inner(examples)
    assert written.written.tolist() == list(range(len(examples)))[::-1]
    packed = packed_batch(collator, examples, inner, written.written)
    _assert_same(packed, _reorder_path(collator, examples))


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
