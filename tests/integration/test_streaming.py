"""Packing a stream (``PackedIterableDataset``): every row used once per epoch over ranks
and DataLoader workers, whatever the source (a list, a ``datasets.Dataset``, a streamed
``datasets.IterableDataset``, a generator function); deterministic for a seed; epochs
reach persistent workers; resume through torchdata's ``StatefulDataLoader`` gives the
batches an uninterrupted run gives; the Hugging Face Trainer trains on it."""

from __future__ import annotations

import re

import pytest
import torch
from torch.utils.data import DataLoader

from helpers import IGNORE, tiny_qwen2_5_vl, trl_rows
from vlm_collate.errors import OptionError
from vlm_collate.packing.stream import OnlinePacker, PackedIterableDataset, online_batches, unwrap

datasets = pytest.importorskip("datasets")
StatefulDataLoader = pytest.importorskip("torchdata.stateful_dataloader").StatefulDataLoader

N = 24
MAX_LENGTH = 256


@pytest.fixture(scope="module")
def rows():
    return trl_rows(N)


def replies(batch, tokenizer) -> list[int]:
    """The row numbers named by the batch's labelled replies (ground truth: the row's
    own text, ``Picture i.``)."""
    labels = batch["labels"]
    text = tokenizer.decode(labels[labels != IGNORE])
    return [int(x) for x in re.findall(r"Picture (\d+)\.", text)]


def source(kind: str, rows):
    if kind == "list":
        return rows
    if kind == "dataset":
        return datasets.Dataset.from_list(rows)
    if kind == "streamed":
        return datasets.Dataset.from_list(rows).to_iterable_dataset(num_shards=4)
    if kind == "generator function":
        return lambda: iter(rows)
    raise AssertionError(kind)


def batches_of(rows, processor, rank, world, workers, **kw):
    data = PackedIterableDataset(
        rows, processor, MAX_LENGTH, buffer_size=4, rank=rank, world_size=world, **kw
    )
    loader = DataLoader(data, batch_size=None, num_workers=workers, collate_fn=unwrap)
    return list(loader)


@pytest.mark.parametrize("kind", ["list", "dataset", "streamed", "generator function"])
def test_every_row_once_over_two_ranks_and_two_workers(qwen_processor, rows, kind):
    seen = []
    for rank in range(2):
        for batch in batches_of(source(kind, rows), qwen_processor, rank, 2, 2):
            assert batch["input_ids"].shape[1] <= MAX_LENGTH
            assert "pixel_values" in batch or all(
                n % 3 == 2 for n in replies(batch, qwen_processor.tokenizer)
            )
            seen += replies(batch, qwen_processor.tokenizer)
    assert sorted(seen) == list(range(N))


def test_a_stream_with_fewer_shards_than_workers(qwen_processor, rows):
    stream = datasets.Dataset.from_list(rows).to_iterable_dataset(num_shards=1)
    got = batches_of(stream, qwen_processor, 0, 1, 2)
    assert sorted(n for b in got for n in replies(b, qwen_processor.tokenizer)) == list(range(N))


def test_deterministic_and_epochs_reach_persistent_workers(qwen_processor, rows):
    data = datasets.Dataset.from_list(rows)

    def order(batches):
        return [replies(b, qwen_processor.tokenizer) for b in batches]

    first = order(batches_of(data, qwen_processor, 0, 1, 2, seed=5))
    assert first == order(batches_of(data, qwen_processor, 0, 1, 2, seed=5))
    stream = PackedIterableDataset(data, qwen_processor, MAX_LENGTH, buffer_size=4, seed=5)
    loader = DataLoader(
        stream, batch_size=None, num_workers=2, persistent_workers=True, collate_fn=unwrap
    )
    epochs = []
    for epoch in range(2):
        stream.set_epoch(epoch)
        epochs.append(order(loader))
    assert epochs[0] == first
    assert epochs[1] != first
    assert sorted(sum(epochs[1], [])) == list(range(N))
    fresh = PackedIterableDataset(data, qwen_processor, MAX_LENGTH, buffer_size=4, seed=5)
    fresh.set_epoch(1)
    assert order(DataLoader(fresh, batch_size=None, num_workers=2, collate_fn=unwrap)) == epochs[1]


def same(a, b) -> bool:
    keys = ("input_ids", "labels", "position_ids", "pixel_values", "image_grid_thw")
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in keys if k in a)


@pytest.mark.parametrize("kind", ["dataset", "streamed"])
@pytest.mark.parametrize("stop", [1, 3])
def test_resume_is_exact_with_stateful_dataloader(qwen_processor, rows, kind, stop):
    for rank in range(2):

        def loader(rank=rank):
            data = PackedIterableDataset(
                source(kind, rows),
                qwen_processor,
                MAX_LENGTH,
                buffer_size=4,
                seed=1,
                rank=rank,
                world_size=2,
            )
            return data.loader(num_workers=2)

        whole = list(loader())
        first = loader()
        it = iter(first)
        head = [next(it) for _ in range(stop)]
        state = first.state_dict()
        del it
        resumed = loader()
        resumed.load_state_dict(state)
        rest = list(resumed)
        assert all(same(a, b) for a, b in zip(head, whole))
        assert len(rest) == len(whole) - stop
        assert all(same(a, b) for a, b in zip(rest, whole[stop:]))


def test_online_packer_fills_rows_and_keeps_every_sample():
    lengths = torch.randint(10, 600, (500,), generator=torch.Generator().manual_seed(0)).tolist()
    lengths[7] = 5000  # over-long: a batch of its own
    batches = list(online_batches(lengths, 1024, rows_per_batch=2, buffer_size=50))
    assert sorted(k for b in batches for k in b) == list(range(500))
    assert [7] in batches
    assert all(sum(lengths[k] for k in b) <= 2048 for b in batches if b != [7])
    fill = (sum(lengths) - 5000) / (2048 * (len(batches) - 1))
    assert fill > 0.9, fill
    with pytest.raises(OptionError, match="buffer_size"):
        OnlinePacker(1024, buffer_size=0)


def test_bad_arguments_are_named(qwen_processor, rows):
    with pytest.raises(OptionError, match="rank"):
        PackedIterableDataset(rows, qwen_processor, MAX_LENGTH, rank=2, world_size=2)
    with pytest.raises(OptionError, match="both rank and world_size"):
        PackedIterableDataset(rows, qwen_processor, MAX_LENGTH, rank=0)
    once = PackedIterableDataset(iter(rows), qwen_processor, MAX_LENGTH)
    assert sorted(n for b in once for n in replies(b, qwen_processor.tokenizer)) == list(range(N))
    once.set_epoch(1)
    with pytest.raises(OptionError, match="generator"):
        list(once)
    with pytest.raises(OptionError, match="missing"):
        once.load_state_dict({"epoch": 0})


@pytest.mark.slow
def test_trainer_trains_on_a_streamed_dataset_with_max_steps(qwen_processor, rows, tmp_path):
    from transformers import Trainer, TrainingArguments

    stream = datasets.Dataset.from_list(rows).to_iterable_dataset(num_shards=2)
    data = PackedIterableDataset(stream, qwen_processor, MAX_LENGTH, buffer_size=4)
    model = tiny_qwen2_5_vl(qwen_processor).train()
    before = [p.detach().clone() for p in model.parameters()]
    args = TrainingArguments(
        output_dir=str(tmp_path),
        max_steps=5,
        per_device_train_batch_size=1,
        learning_rate=0.05,
        report_to=[],
        use_cpu=True,
        save_strategy="no",
        logging_steps=1,
        dataloader_num_workers=2,
        remove_unused_columns=False,  # the batches are built already
        # accelerate would cut every tensor of a dispatched batch to batch_size rows
        accelerator_config={"dispatch_batches": False},
    )
    trainer = Trainer(model=model, args=args, train_dataset=data, data_collator=unwrap)
    result = trainer.train()
    assert result.global_step == 5
    losses = [e["loss"] for e in trainer.state.log_history if "loss" in e]
    assert len(losses) == 5 and all(loss > 0 for loss in losses)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
