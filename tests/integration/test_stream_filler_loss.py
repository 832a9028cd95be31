"""What a filler batch (a rank that ran out: every label ignored) does to training, on the
tiny Qwen2.5-VL: the model's mean cross-entropy is NaN (0 / 0) but every gradient is
finite and zero, so an SGD step leaves the weights as they were; given the number of
target tokens as the Hugging Face Trainer gives it (``num_items_in_batch``, counted
over the ranks), the loss is 0 exactly and a real batch's loss is its mean loss."""

from __future__ import annotations

import math

import pytest
import torch

from helpers import tiny_qwen2_5_vl, trl_rows
from vlm_collate.packing.stream import PackedIterableDataset, ignored

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def batch(qwen_processor):
    data = PackedIterableDataset(trl_rows(3), qwen_processor, 256, buffer_size=3, seed=0)
    return next(iter(data))


def _grads(model) -> list[torch.Tensor]:
    return [p.grad.detach().clone() for p in model.parameters() if p.grad is not None]


def test_a_filler_batch_has_nan_mean_loss_and_zero_gradients(qwen_processor, batch):
    model = tiny_qwen2_5_vl(qwen_processor).train()
    filler = ignored(batch)
    assert bool((batch["labels"] != -100).any()) and not bool((filler["labels"] != -100).any())
    before = [p.detach().clone() for p in model.parameters()]
    loss = model(**filler).loss
    assert math.isnan(float(loss))  # the mean over no target token
    loss.backward()
    grads = _grads(model)
    assert grads and all(bool(torch.isfinite(g).all()) for g in grads)
    assert all(bool((g == 0).all()) for g in grads)
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))


def test_counting_target_tokens_gives_a_zero_loss(qwen_processor, batch):
    """The Trainer's way (and the plain loop's recipe of docs/packing.md): the loss is
    summed and divided by the target tokens of the step over all ranks, so a filler
    contributes 0, not NaN, and a real batch alone gets its mean loss."""
    model = tiny_qwen2_5_vl(qwen_processor).train()
    targets = int((batch["labels"][..., 1:] != -100).sum())
    mean = model(**batch).loss
    counted = model(**batch, num_items_in_batch=torch.tensor(targets)).loss
    assert float(counted) == pytest.approx(float(mean), rel=1e-5)
    # a filler on this rank, the other rank's targets in the count
    loss = model(**ignored(batch), num_items_in_batch=torch.tensor(targets)).loss
    assert float(loss) == 0.0
    loss.backward()
    assert all(bool((g == 0).all()) for g in _grads(model))
