"""The collator in a ``torch.utils.data.DataLoader``: spawned workers (the collator
pickled into each) give the same batches as the main process."""

from __future__ import annotations

import pytest
import torch

from helpers import make_image, one_turn
from vlm_collate import VLMCollator

pytestmark = pytest.mark.slow


def chat(reply: str = "Yes", *, images=(), question: str = "Is it blue?") -> dict:
    return one_turn(question, reply=reply, images=images)


def test_dataloader_workers_give_identical_batches(qwen_processor):
    data = [chat(reply=f"reply {i}", images=[make_image(seed=i)] * (i % 2)) for i in range(8)]
    collator = VLMCollator(qwen_processor)
    single = list(torch.utils.data.DataLoader(data, batch_size=4, collate_fn=collator))
    workers = list(
        torch.utils.data.DataLoader(
            data,
            batch_size=4,
            collate_fn=collator,
            num_workers=2,
            persistent_workers=True,
            multiprocessing_context="spawn",  # the collator is pickled into each worker
        )
    )
    assert len(single) == len(workers) == 2
    for a, b in zip(single, workers):
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), key
