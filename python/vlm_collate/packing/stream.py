"""Packing a stream: :class:`PackedIterableDataset` reads rows from any iterable (a
``datasets`` dataset, streamed or not, a generator, a WebDataset pipeline), estimates
each row's length without decoding pixels, packs rows online by best fit over a bounded
buffer (:class:`OnlinePacker`, numbers only) and collates each group with
:class:`~vlm_collate.packing.PackedCollator` inside the DataLoader workers.

Sharding uses what exists: ``datasets.distributed.split_dataset_by_node`` and the split
``datasets`` makes across DataLoader workers by itself; ranks come from
``torch.distributed`` (or the arguments). Resume is exact through torchdata's
``StatefulDataLoader`` (``state_dict`` / ``load_state_dict``). :class:`EvenLoader` gives
every rank the same number of batches per epoch (a rank that runs out gets batches
whose labels are all ignored), so DDP/FSDP never wait at an epoch's end."""

from __future__ import annotations

import bisect
import copy
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info

from ..engine import IGNORE_INDEX
from ..errors import OptionError
from .collator import PackedCollator
from .sampler import LengthEstimator, _distributed


class OnlinePacker:
    """Online best fit over a buffer of at most ``buffer_size`` samples, numbers only.

    ``push(length, key)`` adds a sample; while :meth:`full`, :meth:`pop` takes a batch of
    up to ``rows_per_batch`` rows: each row starts with the longest buffered sample and
    is filled with the longest ones that still fit. A sample longer than ``max_length``
    is a batch of its own. The order is a function of the pushed ``(length, key)`` pairs
    only (ties broken by ``key``), so replaying the same pushes replays the same batches.
    """

    def __init__(self, max_length: int, rows_per_batch: int = 1, buffer_size: int = 1000):
        for name, value in (
            ("max_length", max_length),
            ("rows_per_batch", rows_per_batch),
            ("buffer_size", buffer_size),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise OptionError(f"{name} must be a positive integer, got {value!r}")
        self.max_length = int(max_length)
        self.rows_per_batch = int(rows_per_batch)
        self.buffer_size = int(buffer_size)
        self.buffer: list[tuple[int, int]] = []  # sorted (length, key)

    def push(self, length: int, key: int) -> None:
        bisect.insort(self.buffer, (int(length), int(key)))

    def full(self) -> bool:
        return len(self.buffer) >= self.buffer_size

    def __len__(self) -> int:
        return len(self.buffer)

    def pop(self) -> tuple[list[int], int]:
        """``(keys, tokens)`` of the next batch (``tokens``: the sum of their lengths)."""
        buffer, keys, tokens = self.buffer, [], 0
        for _ in range(self.rows_per_batch):
            if not buffer:
                break
            if buffer[-1][0] > self.max_length:
                if keys:  # an over-long sample is a batch of its own
                    break
                length, key = buffer.pop()
                return [key], length
            length, key = buffer.pop()
            keys.append(key)
            room = self.max_length - length
            tokens += length
            while buffer and room > 0:
                i = bisect.bisect_right(buffer, (room, 1 << 62)) - 1
                if i < 0:
                    break
                length, key = buffer.pop(i)
                keys.append(key)
                room -= length
                tokens += length
        return keys, tokens

    def keys(self) -> list[int]:
        return [key for _, key in self.buffer]


def online_batches(
    lengths: Iterable[int], max_length: int, rows_per_batch: int = 1, buffer_size: int = 1000
) -> Iterator[list[int]]:
    """The batches (lists of positions) :class:`PackedIterableDataset` forms from a stream
    of ``lengths`` (one reader), for simulations and benchmarks."""
    packer = OnlinePacker(max_length, rows_per_batch, buffer_size)
    for key, length in enumerate(lengths):
        packer.push(length, key)
        while packer.full():
            yield packer.pop()[0]
    while len(packer):
        yield packer.pop()[0]


def _is_hf_iterable(rows: Any) -> bool:
    try:
        import datasets
    except ImportError:  # pragma: no cover - datasets is optional
        return False
    return isinstance(rows, datasets.IterableDataset)


def _is_sequence(rows: Any) -> bool:
    return hasattr(rows, "__len__") and hasattr(rows, "__getitem__") and not isinstance(rows, dict)


class PackedIterableDataset(IterableDataset):
    """A ``torch`` ``IterableDataset`` of packed batches (the keys and contract of
    :class:`~vlm_collate.packing.PackedCollator`) over any iterable of ``rows``.

    Use it with ``batch_size=None`` (it yields whole batches): ``DataLoader(ds,
    batch_size=None, num_workers=N)``, torchdata's ``StatefulDataLoader`` for resumable
    runs, or :meth:`loader` (a :class:`EvenLoader`: the same number of batches on every
    rank). Each worker estimates lengths (:class:`LengthEstimator`, image headers, no
    pixels), packs online over ``buffer_size`` rows and collates its batches.

    Sharding, so that over all ranks and workers every row is used once per epoch:
    ``rank``/``world_size`` (default: ``torch.distributed`` when initialised, else one
    rank); a ``datasets.IterableDataset`` is split with ``split_dataset_by_node`` and
    then across DataLoader workers by ``datasets`` itself (a stream with fewer shards than
    workers is read by fewer workers); a sequence (``datasets.Dataset``, a list) is
    shuffled with ``seed + epoch`` (``shuffle=True``) and dealt to ranks, then workers;
    any other iterable is read by every worker, each keeping every ``world_size x
    workers``-th row. A callable is called for a fresh iterable each epoch (pass a
    generator function, not a generator, to run several epochs).

    ``set_epoch(n)`` reaches persistent workers (the epoch lives in shared memory).
    ``state_dict()`` / ``load_state_dict()``: a worker's place in its stream (rows read,
    positions still buffered, batches yielded); on resume the stream is read again up to
    that place without estimating or collating the rows already used.
    ``**options`` go to :class:`PackedCollator` (``rope`` defaults to ``"auto"``).
    """

    def __init__(
        self,
        rows: Any,
        processor: Any,
        max_length: int,
        *,
        buffer_size: int = 1000,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        rows_per_batch: int = 1,
        rope: Any = "auto",
        shuffle: bool = True,
        length_estimator: Callable[[Any], int] | None = None,
        **options: Any,
    ):
        super().__init__()
        if isinstance(rows, Iterator) and not _is_hf_iterable(rows):
            # A generator is consumed once: fine for one epoch, said here for the next.
            self._one_shot = True
        else:
            self._one_shot = False
        self.rows = rows
        self.collator = PackedCollator(processor, max_length, rope=rope, **options)
        self.max_length = self.collator.max_length
        OnlinePacker(self.max_length, rows_per_batch, buffer_size)  # validates the numbers
        self.rows_per_batch, self.buffer_size = int(rows_per_batch), int(buffer_size)
        self.estimate = length_estimator or LengthEstimator(processor)
        self.seed, self.shuffle = int(seed), bool(shuffle)
        if (rank is None) != (world_size is None):
            raise OptionError("give both rank and world_size, or neither")
        self._rank, self._world = rank, world_size
        if world_size is not None and not 0 <= int(rank) < int(world_size):  # type: ignore[arg-type]
            raise OptionError(f"rank must be in [0, {world_size}), got {rank}")
        self._epoch = torch.zeros((), dtype=torch.int64).share_memory_()
        self._pending: dict[str, Any] | None = None
        self._state: dict[str, Any] = self._fresh_state(0)

    # -- epochs and sharding ---------------------------------------------------------
    @property
    def epoch(self) -> int:
        return int(self._epoch)

    def set_epoch(self, epoch: int) -> None:
        """The epoch the next iteration reads (also seen by persistent workers)."""
        self._epoch.fill_(int(epoch))
        if _is_hf_iterable(self.rows):
            self.rows.set_epoch(int(epoch))

    def rank_and_world(self) -> tuple[int, int]:
        if self._world is not None:
            return int(self._rank), int(self._world)  # type: ignore[arg-type]
        world, rank = _distributed()
        return rank, world

    def _workers(self) -> tuple[int, int]:
        info = get_worker_info()
        return (info.id, info.num_workers) if info is not None else (0, 1)

    def _stream(self, epoch: int) -> Iterator[Any]:
        """This worker's rows of ``epoch``, in order."""
        rank, world = self.rank_and_world()
        worker, workers = self._workers()
        rows = self.rows() if callable(self.rows) and not _is_sequence(self.rows) else self.rows
        if _is_hf_iterable(rows):
            from datasets.distributed import split_dataset_by_node

            rows.set_epoch(epoch)
            if world > 1:
                rows = split_dataset_by_node(rows, rank=rank, world_size=world)
            return iter(rows)  # datasets splits it across DataLoader workers itself
        if _is_sequence(rows):
            n = len(rows)
            rng = np.random.default_rng(self.seed + epoch)
            order = rng.permutation(n) if self.shuffle else np.arange(n)
            mine = order[rank::world][worker::workers]
            return (rows[int(i)] for i in mine)
        if self._one_shot and epoch > 0:
            raise OptionError(
                "PackedIterableDataset was given a generator, which runs one epoch; pass a "
                "function that returns a fresh iterable (or a dataset) for more"
            )
        readers, me = world * workers, rank * workers + worker
        return (row for j, row in enumerate(rows) if j % readers == me)

    # -- iteration -------------------------------------------------------------------
    @staticmethod
    def _fresh_state(epoch: int) -> dict[str, Any]:
        return {"epoch": epoch, "read": 0, "buffered": [], "yielded": 0}

    def __iter__(self) -> Iterator[Any]:
        resume, self._pending = self._pending, None
        epoch = int(resume["epoch"]) if resume else self.epoch
        state = self._fresh_state(epoch)
        self._state = state
        packer = OnlinePacker(self.max_length, self.rows_per_batch, self.buffer_size)
        buffered: dict[int, Any] = {}
        skip_to = int(resume["read"]) if resume else 0
        keep = set(resume["buffered"]) if resume else set()
        state["yielded"] = int(resume["yielded"]) if resume else 0
        for position, row in enumerate(self._stream(epoch)):
            if position < skip_to:
                if position in keep:  # replay: the saved buffer, nothing else
                    packer.push(self.estimate(row), position)
                    buffered[position] = row
                state["read"] = position + 1
                continue
            packer.push(self.estimate(row), position)
            buffered[position] = row
            state["read"] = position + 1
            while packer.full():
                yield self._collated(packer, buffered, state)
        while len(packer):
            yield self._collated(packer, buffered, state)
        self._state = self._fresh_state(epoch + 1)

    def _collated(self, packer: OnlinePacker, buffered: dict[int, Any], state: dict) -> Any:
        keys, _ = packer.pop()
        batch = self.collator([buffered.pop(k) for k in keys])
        state["buffered"] = packer.keys()
        state["yielded"] += 1
        return batch

    # -- resume ----------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """This worker's place in its stream (numbers only)."""
        state = self._pending if self._pending is not None else self._state
        return copy.deepcopy(state)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """The next iteration continues where ``state`` was taken."""
        missing = {"epoch", "read", "buffered", "yielded"} - set(state)
        if missing:
            raise OptionError(f"not a PackedIterableDataset state: missing {sorted(missing)}")
        self._pending = copy.deepcopy(dict(state))
        self._state = copy.deepcopy(dict(state))

    # -- loaders ---------------------------------------------------------------------
    def loader(self, num_workers: int = 0, **kwargs: Any) -> EvenLoader:
        """A resumable loader (torchdata's ``StatefulDataLoader``) that yields the same
        number of batches on every rank (:class:`EvenLoader`)."""
        from torchdata.stateful_dataloader import StatefulDataLoader

        kwargs.setdefault("collate_fn", unwrap)
        inner = StatefulDataLoader(self, batch_size=None, num_workers=num_workers, **kwargs)
        return EvenLoader(inner, self)

    def filler(self, like: Any | None = None) -> Any:
        """A batch that trains nothing: ``like`` (a batch) with every label ignored, or a
        one-word conversation collated and ignored."""
        if like is None:
            talk = [{"role": "user", "content": "."}, {"role": "assistant", "content": "."}]
            like = self.collator([{"messages": talk}])
        return ignored(like)

    def __repr__(self) -> str:
        return (
            f"PackedIterableDataset({type(self.rows).__name__}, max_length={self.max_length}, "
            f"buffer_size={self.buffer_size}, rows_per_batch={self.rows_per_batch})"
        )


def unwrap(batch: Any) -> Any:
    """``collate_fn`` for a loader of whole batches: the batch as it is (a list of one
    batch, as the Hugging Face Trainer's ``batch_size=1`` gives it, is unwrapped)."""
    if isinstance(batch, list) and len(batch) == 1:
        return batch[0]
    return batch


def ignored(batch: Any) -> Any:
    """``batch`` with every label ignored (same tensors otherwise, the report kept)."""
    out = copy.copy(batch)
    for key in ("labels", "shift_labels"):
        if isinstance(out.get(key), torch.Tensor):
            out[key] = torch.full_like(out[key], IGNORE_INDEX)
    return out


class EvenLoader:
    """Wraps a loader of packed batches so that every rank yields the same number per
    epoch: each step the ranks agree (one ``all_reduce`` of one number) whether any of
    them still has a batch; a rank that has run out yields its last batch with every
    label ignored (the model still runs, vision tower included) until all have run out.
    Without an initialised ``torch.distributed`` group it is the loader itself.

    ``state_dict`` / ``load_state_dict`` resume exactly, the filler tail included. Under
    ``torch.distributed`` the state holds the wrapped loader's state from before its
    latest batch: a resumed loader fetches that batch again (recomputed, not yielded),
    so that a rank that then runs out builds the same filler from it. This costs one
    ``state_dict()`` of the wrapped loader per step, and one batch per resume."""

    def __init__(self, loader: Any, dataset: PackedIterableDataset | None = None, group=None):
        self.loader, self.dataset, self.group = loader, dataset, group
        self._before_last: dict[str, Any] | None = None  # the loader's state before `last`
        self._filling = False  # this rank has run out and yields fillers
        self._resume: dict[str, Any] | None = None

    def state_dict(self) -> dict[str, Any]:
        if self._before_last is not None:  # refetch the latest batch on resume
            return {"loader": copy.deepcopy(self._before_last), "refetch": True}
        # Before the first batch, outside torch.distributed, or a rank that ran out
        # without any batch this epoch (its loader's end-of-epoch state, not read again).
        return {"loader": self.loader.state_dict(), "refetch": False, "filling": self._filling}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if "loader" not in state:  # a bare loader state (saved by an older EvenLoader)
            state = {"loader": state, "refetch": False}
        self.loader.load_state_dict(state["loader"])
        self._resume = {k: v for k, v in state.items() if k != "loader"}

    def set_epoch(self, epoch: int) -> None:
        if self.dataset is not None:
            self.dataset.set_epoch(epoch)

    def __iter__(self) -> Iterator[Any]:
        import torch.distributed as dist

        resume, self._resume = self._resume or {}, None
        self._filling, self._before_last = False, None
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            yield from self.loader
            return
        device = "cuda" if dist.get_backend(self.group) == "nccl" else "cpu"
        last = None
        if resume.get("filling") and not resume.get("refetch"):
            # Ran out without a batch: the loader is at its end of epoch and is not read
            # (its next iteration starts the next epoch).
            source: Iterator[Any] = iter(())
            self._filling = True
        else:
            source = iter(self.loader)
        if resume.get("refetch"):
            before = self.loader.state_dict()
            last = next(source, None)  # yielded before the stop: rebuilt, not yielded
            if last is None:
                raise OptionError(
                    "EvenLoader cannot resume: the loader gave no batch from the saved state "
                    "(resume with the loader and the data of the saved run)"
                )
            self._before_last = before
        while True:
            before = self.loader.state_dict() if not self._filling else None
            batch = next(source, None) if not self._filling else None
            flag = torch.tensor([0 if batch is None else 1], device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.group)
            if int(flag.item()) == 0:
                self._filling, self._before_last = False, None
                return
            if batch is None:
                if last is None and self.dataset is None:
                    raise OptionError("EvenLoader needs the dataset when a rank has no batch")
                self._filling = True
                batch = ignored(last) if last is not None else self.dataset.filler()
            else:
                last, self._before_last = batch, before
            yield batch


__all__ = [
    "EvenLoader",
    "OnlinePacker",
    "PackedIterableDataset",
    "ignored",
    "online_batches",
    "unwrap",
]
