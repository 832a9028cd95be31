"""Output buffers reused outside DataLoader workers: a batch the caller still holds (or
any view, array or storage object of it) is never overwritten; a released one's memory
is written again by the next call; every reused batch still equals the processor's."""

from __future__ import annotations

import gc

import numpy as np
import pytest
import torch

from helpers import make_image, one_turn
from vlm_collate import qwen2_5_collate_fn
from vlm_collate.pipeline.fast_path import BUFFERS, OutputBuffers


def _examples(seed: int) -> list[dict]:
    """Four samples with one 56x56 image each (same shapes for every seed)."""
    return [
        one_turn(f"What is in picture {seed}.{i}?", images=[make_image(56, 56, seed * 10 + i)])
        for i in range(4)
    ]


@pytest.fixture(autouse=True)
def _empty_pool():
    BUFFERS.clear()
    gc.collect()
    yield
    BUFFERS.clear()


def _pixels(batch) -> torch.Tensor:
    return batch["pixel_values"]


def test_a_released_batch_is_reused_and_a_held_one_never_overwritten(qwen_processor):
    first = qwen2_5_collate_fn(_examples(0), qwen_processor)
    kept = _pixels(first).clone()
    address = _pixels(first).data_ptr()

    # Held: the next call gets other memory and the held batch keeps its values.
    second = qwen2_5_collate_fn(_examples(1), qwen_processor)
    assert _pixels(second).data_ptr() != address
    assert torch.equal(_pixels(first), kept)
    assert not torch.equal(_pixels(second), kept)

    # Released: the next call writes into the same memory, and its values are right.
    del first
    third = qwen2_5_collate_fn(_examples(2), qwen_processor)
    assert _pixels(third).data_ptr() == address
    fresh = qwen2_5_collate_fn(_examples(2), qwen_processor, fast_path=False)
    assert torch.equal(_pixels(third), _pixels(fresh))


@pytest.mark.parametrize(
    "hold",
    [
        lambda t: t,  # the tensor itself
        lambda t: t[1:],  # a view
        lambda t: t.numpy(),  # a numpy array over it
        lambda t: t.untyped_storage(),  # its storage object
        lambda t: torch.utils.dlpack.to_dlpack(t),  # a DLPack capsule
        lambda t: torch.from_numpy(t.numpy()),  # a tensor over an array of it
    ],
    ids=["tensor", "view", "numpy", "storage", "dlpack", "from_numpy"],
)
def test_anything_made_from_a_batch_keeps_it_from_reuse(qwen_processor, hold):
    batch = qwen2_5_collate_fn(_examples(0), qwen_processor)
    kept = _pixels(batch).clone()
    address = _pixels(batch).data_ptr()
    held = hold(_pixels(batch))
    del batch
    for seed in (1, 2, 3):  # more calls than the pool keeps storages
        other = qwen2_5_collate_fn(_examples(seed), qwen_processor)
        assert _pixels(other).data_ptr() != address
    if isinstance(held, torch.Tensor) and held.shape == kept.shape:
        assert torch.equal(held, kept)
    elif isinstance(held, np.ndarray):
        assert np.array_equal(held, kept.numpy())


def test_a_loop_holding_the_previous_batch_alternates_two_storages(qwen_processor):
    # `for batch in loader` holds the previous batch while the next one is built.
    addresses, previous, previous_values = [], None, None
    for seed in range(6):
        batch = qwen2_5_collate_fn(_examples(seed), qwen_processor)
        if previous is not None:
            assert torch.equal(previous, previous_values)  # not overwritten while held
        addresses.append(_pixels(batch).data_ptr())
        previous, previous_values = _pixels(batch), _pixels(batch).clone()
        del batch
    assert len(set(addresses)) == 2, addresses


def test_the_pool_keeps_sizes_close_and_threads_apart():
    pool = OutputBuffers(keep=2, slack=1.5)
    big = pool.tensor((1000,), torch.float32)
    address = big.data_ptr()
    del big
    # Far smaller: not handed a storage it would pin; slightly smaller: reused.
    assert pool.tensor((100,), torch.float32).data_ptr() != address
    assert pool.tensor((900,), torch.float32).data_ptr() == address
    seen = []

    def other_thread():
        seen.append(pool.tensor((900,), torch.float32).data_ptr())

    import threading

    thread = threading.Thread(target=other_thread)
    thread.start()
    thread.join()
    assert seen[0] != address  # each thread has its own storages


def test_in_a_worker_the_output_stays_in_shared_memory(monkeypatch):
    from vlm_collate.pipeline import fast_path

    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: object())
    tensor = fast_path.output_tensor((8, 3), torch.float32)
    assert tensor.is_shared()
    assert not BUFFERS._pool()
