"""EvenLoader resumes exactly in the filler tail: two ranks under torchrun (gloo, CPU),
one running out of rows long before the other; a run stopped after step k (the last
real batch of the short rank, its first filler, a later filler) and resumed from
``loader.state_dict()`` on fresh loaders yields, on both ranks, exactly the batches the
uninterrupted run yields after step k, and the same number of steps."""

from __future__ import annotations

import json
import textwrap

import pytest

from helpers import two_ranks

pytestmark = pytest.mark.slow

ROWS = 24
# split_dataset_by_node gives rank 0 shards 0 and 2 (11 rows each), rank 1 shards 1 and 3
SHARDS = [list(range(0, 11)), [11, 12], list(range(13, 23)), [23]]

RANK_SCRIPT = textwrap.dedent(
    """
    import json, os, sys

    import datasets
    import torch
    import torch.distributed as dist
    from transformers import Qwen2_5_VLProcessor

    from helpers import trl_rows
    from vlm_collate.packing.stream import PackedIterableDataset

    processor_dir, out, rows, shards = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    processor = Qwen2_5_VLProcessor.from_pretrained(processor_dir)
    ALL = trl_rows(rows)

    def gen(ids):
        for shard in ids:
            for i in shard:
                yield ALL[i]

    def loader():
        stream = datasets.IterableDataset.from_generator(
            gen, gen_kwargs={"ids": json.loads(shards)}
        )
        data = PackedIterableDataset(stream, processor, 160, buffer_size=2, seed=0)
        return data.loader(num_workers=2)

    def record(batch):
        return [batch["input_ids"].tolist(), batch["labels"].tolist()]

    full, states, real = [], [], 0
    run = loader()
    for batch in run:
        full.append(record(batch))
        states.append(run.state_dict())
        real += int(bool((batch["labels"] != -100).any()))
    reals = [None] * world
    dist.all_gather_object(reals, real)
    short = min(reals)
    stops = [short, short + 1, len(full) - 1]  # steps done before the stop
    resumed = {}
    for k in stops:
        again = loader()
        again.load_state_dict(json.loads(json.dumps(states[k - 1])))  # plain data
        resumed[k] = [record(batch) for batch in again]
    record_ = {
        "steps": len(full), "real": real, "stops": stops,
        "same": {str(k): resumed[k] == full[k:] for k in stops},
        "resumed_steps": {str(k): len(resumed[k]) for k in stops},
        "fillers_after": {
            str(k): sum(all(x == -100 for r in b[1] for x in r) for b in full[k:]) for k in stops
        },
    }
    gathered = [None] * world
    dist.all_gather_object(gathered, record_)
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


def test_resume_inside_the_filler_tail_gives_the_same_batches(qwen_processor, tmp_path):
    pytest.importorskip("datasets")
    pytest.importorskip("torchdata.stateful_dataloader")
    ranks = two_ranks(RANK_SCRIPT, qwen_processor, tmp_path, str(ROWS), json.dumps(SHARDS))
    big, small = ranks
    assert small["real"] < big["real"] == big["steps"] == small["steps"]
    stops = big["stops"]
    assert stops[0] == small["real"] and stops[-1] > stops[1] > stops[0]
    # the short rank resumes into its filler tail (ignored batches only), the other not
    assert small["fillers_after"][str(stops[0])] == small["steps"] - stops[0]
    assert all(n == 0 for n in big["fillers_after"].values())
    for k in map(str, stops):
        assert big["same"][k] and small["same"][k], k
        assert big["resumed_steps"][k] == small["resumed_steps"][k] == big["steps"] - int(k)
