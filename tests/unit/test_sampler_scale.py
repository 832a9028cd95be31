"""PackedBatchSampler in numbers: each rank's share of the epoch's plan, built once per
epoch (len() then O(1)); ranks partition the samples; balanced rounds; exact resume
through torchdata's StatefulDataLoader."""

from __future__ import annotations

import numpy as np
import pytest

from vlm_collate import PackedBatchSampler
from vlm_collate.errors import OptionError

LENGTHS = np.random.default_rng(1).integers(20, 900, size=5000)
VISION = np.random.default_rng(2).integers(0, 600, size=5000)


def shares(**kw):
    return [list(PackedBatchSampler(LENGTHS, 1024, num_replicas=4, rank=r, **kw)) for r in range(4)]


def test_ranks_partition_the_samples_and_len_is_cached():
    got = shares(seed=3, drop_last=True)
    every = [i for share in got for b in share for i in b]
    assert len(every) == len(set(every))
    assert len({len(s) for s in got}) == 1
    sampler = PackedBatchSampler(LENGTHS, 1024, num_replicas=4, rank=1, seed=3, drop_last=True)
    assert len(sampler) == len(got[1])
    plan = sampler._plan
    assert len(sampler) == len(got[1]) and sampler._plan is plan  # no new plan
    full = shares(seed=3)
    assert {i for s in full for b in s for i in b} == set(range(len(LENGTHS)))
    assert all(LENGTHS[b].sum() <= 1024 for s in full for b in s)


def imbalance(per_rank, cost):
    steps = np.array([[cost[b].sum() for b in batches] for batches in per_rank])
    return float((steps.max(axis=0) / steps.mean(axis=0)).mean())


def test_balance_by_tokens_and_by_vision():
    plain = imbalance(shares(seed=0, balance=None), VISION)
    vision = imbalance(shares(seed=0, balance="vision", vision=VISION), VISION)
    assert vision < plain and vision < 1.05, (vision, plain)
    tokens = imbalance(shares(seed=0, balance="tokens"), LENGTHS)
    assert tokens <= imbalance(shares(seed=0, balance=None), LENGTHS)
    with pytest.raises(OptionError, match="vision"):
        PackedBatchSampler(LENGTHS, 1024, balance="vision")


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_through_stateful_dataloader(workers):
    StatefulDataLoader = pytest.importorskip("torchdata.stateful_dataloader").StatefulDataLoader
    data = list(range(len(LENGTHS)))

    def loader():
        sampler = PackedBatchSampler(LENGTHS, 1024, num_replicas=2, rank=1, seed=4)
        return StatefulDataLoader(data, batch_sampler=sampler, num_workers=workers)

    whole = [b.tolist() for b in loader()]
    first = loader()
    it = iter(first)
    head = [next(it).tolist() for _ in range(5)]
    state = first.state_dict()
    resumed = loader()
    resumed.load_state_dict(state)
    assert head == whole[:5]
    assert [b.tolist() for b in resumed] == whole[5:]


def test_engine_pack_bins_agrees_with_the_reference():
    """The engine's O(n log n) best/first fit (a bit index over rooms for many documents,
    an ordered set for few) places every document as the by-definition reference does."""
    from vlm_collate import engine, reference

    rng = np.random.default_rng(7)
    cases = [(rng.integers(0, 65, size=n), 64) for n in (0, 1, 7, 300, 2000)]
    cases += [(rng.integers(0, 9000, size=600), 9000), (np.zeros(5, np.int64), 1)]
    cases += [(rng.integers(1, 5000, size=40), 5000)]  # few documents: the ordered set
    for lengths, capacity in cases:
        for strategy in ("best_fit", "first_fit"):
            order, offsets = engine.pack_bins(lengths.astype(np.int64), capacity, strategy)
            got = [order[a:b].tolist() for a, b in zip(offsets[:-1], offsets[1:])]
            assert got == reference.pack_bins(lengths.tolist(), capacity, strategy), (
                strategy,
                capacity,
                len(lengths),
            )


def test_row_lengths_pickles_by_key_only_while_shared(qwen_processor):
    """add_lengths' map function: while its estimator is shared (forked workers inherit
    it) it pickles as its key alone; otherwise it carries the estimator; a key-only copy
    in a process without the estimator is a clear error, never a wrong length."""
    import pickle

    from vlm_collate.packing import lengths as L

    row = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "What is this?"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "A test."}]},
        ]
    }
    batch = {"messages": [row["messages"]]}
    function = L.RowLengths(qwen_processor)
    want = function(batch, [0])
    full = pickle.dumps(function)
    function.key = "k"
    L._SHARED["k"] = function.estimate
    try:
        by_key = pickle.dumps(function)
        assert len(by_key) < len(full) / 100
        assert pickle.loads(by_key).estimate is function.estimate
        assert pickle.loads(by_key)(batch, [0]) == want
    finally:
        del L._SHARED["k"]
    assert pickle.loads(full)(batch, [0]) == want
    assert pickle.loads(pickle.dumps(function))(batch, [0]) == want  # not shared: carries it
    with pytest.raises(OptionError, match="did not inherit"):
        L._rebuilt("length", "k", None)
