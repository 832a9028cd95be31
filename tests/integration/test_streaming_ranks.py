"""Two ranks under ``torchrun`` (gloo, CPU) streaming packed batches from shards of very
different sizes: ``PackedIterableDataset.loader`` (an ``EvenLoader``) gives both ranks the
same number of steps (no rank waits forever in an all-reduce; the subprocess timeout
turns a hang into a failure), every row is used exactly once over ranks x workers, and a
DDP step of a tiny Qwen2.5-VL runs on every step, the ranks ending with equal weights."""

from __future__ import annotations

import json
import textwrap

import pytest

from helpers import two_ranks

pytestmark = pytest.mark.slow

ROWS = 24
# Four stream shards: split_dataset_by_node gives rank 0 shards 0 and 2 (11 rows each)
# and rank 1 shards 1 and 3 (one row each); each of a rank's 2 workers reads one shard.
SHARDS = [list(range(0, 11)), [11], list(range(12, 23)), [23]]

RANK_SCRIPT = textwrap.dedent(
    """
    import json, os, math, re, sys

    import datasets
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from transformers import Qwen2_5_VLProcessor

    from helpers import tiny_qwen2_5_vl, trl_rows
    from vlm_collate.packing.stream import PackedIterableDataset

    processor_dir, out, rows, shards = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    processor = Qwen2_5_VLProcessor.from_pretrained(processor_dir)
    ALL = trl_rows(rows)

    def gen(ids):  # ids: this shard's part of the gen_kwargs list (one list of rows)
        for shard in ids:
            for i in shard:
                yield ALL[i]

    stream = datasets.IterableDataset.from_generator(
        gen, gen_kwargs={"ids": json.loads(shards)}
    )
    data = PackedIterableDataset(stream, processor, 256, buffer_size=4, seed=0)
    loader = data.loader(num_workers=2)
    model = DistributedDataParallel(tiny_qwen2_5_vl(processor).train(), find_unused_parameters=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    seen, steps, real, losses = [], 0, 0, []
    for batch in loader:
        labels = batch["labels"]
        if bool((labels != -100).any()):
            real += 1
            reply = processor.tokenizer.decode(labels[labels != -100])
            seen += [int(x) for x in re.findall(r"Picture (\\d+)\\.", reply)]
        loss = model(**batch).loss
        loss.backward()  # a batch with every label ignored: NaN mean loss, zero gradients
        optimizer.step()
        optimizer.zero_grad()
        steps += 1
        losses.append(float(loss.detach()))
    params = [p.detach().double() for p in model.parameters()]
    checksum = torch.stack([p.sum() for p in params]).sum()
    finite = all(bool(torch.isfinite(p).all()) for p in params)
    gathered = [None] * world
    record = {
        "seen": seen, "steps": steps, "real": real, "losses": losses,
        "checksum": float(checksum), "finite": finite,
    }
    dist.all_gather_object(gathered, record)
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


def test_uneven_ranks_take_the_same_steps_and_use_every_row_once(qwen_processor, tmp_path):
    pytest.importorskip("datasets")
    pytest.importorskip("torchdata.stateful_dataloader")
    ranks = two_ranks(RANK_SCRIPT, qwen_processor, tmp_path, str(ROWS), json.dumps(SHARDS))
    assert len(ranks) == 2
    big, small = ranks
    # The shards are uneven: rank 1 runs out of real batches long before rank 0.
    assert small["real"] < big["real"]
    assert big["steps"] == small["steps"] == big["real"]
    assert len(big["losses"]) == len(small["losses"]) == big["steps"]
    # Every row exactly once over ranks x workers, each rank's rows from its own shards.
    assert sorted(big["seen"] + small["seen"]) == list(range(ROWS))
    assert set(small["seen"]) == {11, 23}
    # A DDP step ran on every step: gradients averaged, the same finite weights on both.
    assert all(loss > 0 for loss in big["losses"])
    assert big["finite"] and small["finite"]
    assert big["checksum"] == pytest.approx(small["checksum"], rel=1e-9)
