"""Two ranks under ``torchrun`` (gloo, CPU): a ``DistributedSampler`` gives each rank
its own samples, the collator builds their batches, and DDP trains a tiny Qwen2.5-VL
on them with the ranks' gradients averaged."""

from __future__ import annotations

import textwrap

import pytest

from helpers import two_ranks

pytestmark = pytest.mark.slow

SAMPLES = 8

RANK_SCRIPT = textwrap.dedent(
    """
    import json, os, re, sys

    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from torch.utils.data import DataLoader, DistributedSampler
    from transformers import Qwen2_5_VLProcessor

    from helpers import tiny_qwen2_5_vl, trl_rows
    from vlm_collate import VLMCollator

    processor_dir, out, samples = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    processor = Qwen2_5_VLProcessor.from_pretrained(processor_dir)
    rows = trl_rows(samples)
    sampler = DistributedSampler(rows, num_replicas=world, rank=rank, shuffle=True, seed=0)
    loader = DataLoader(rows, batch_size=2, sampler=sampler, collate_fn=VLMCollator(processor))
    model = DistributedDataParallel(tiny_qwen2_5_vl(processor).train(), find_unused_parameters=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    seen, losses = [], []
    for batch in loader:
        for row in batch["labels"]:
            reply = processor.tokenizer.decode(row[row != -100])
            seen.append(int(re.fullmatch(r"Picture (\\d+)\\.<\\|im_end\\|>", reply).group(1)))
        loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        losses.append(float(loss.detach()))
    checksum = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum()
    gathered = [None] * world
    dist.all_gather_object(gathered, {"seen": seen, "losses": losses, "checksum": float(checksum)})
    if rank == 0:
        with open(out, "w") as f:
            json.dump(gathered, f)
    dist.destroy_process_group()
    # Every result is written: leave without the interpreter's teardown, where torch's
    # native threads sometimes abort ("terminate called without an active exception").
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
    """
)


def test_two_ranks_see_disjoint_samples_and_train(qwen_processor, tmp_path):
    ranks = two_ranks(RANK_SCRIPT, qwen_processor, tmp_path, str(SAMPLES))
    assert len(ranks) == 2
    first, second = (set(r["seen"]) for r in ranks)
    assert len(ranks[0]["seen"]) == len(first) == SAMPLES // 2
    assert first.isdisjoint(second) and first | second == set(range(SAMPLES))
    assert all(len(r["losses"]) == 2 and all(loss > 0 for loss in r["losses"]) for r in ranks)
    # DDP averaged the gradients: both ranks hold the same weights after the steps.
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-9)
