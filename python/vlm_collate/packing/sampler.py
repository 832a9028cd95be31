"""Length-aware batching for packed training: sample lengths estimated without pixel
preprocessing, and a batch sampler that groups samples into batches that fill rows of
``max_length`` tokens, deterministic for a seed and sharded across ranks."""

from __future__ import annotations

import copy
import io
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from PIL import Image

from .. import engine
from ..errors import OptionError
from ..formats.conversation import conversation_of
from ..options import CollateOptions, collate_options
from ..pipeline.encode import fps_budgets, frame_budgets
from ..pipeline.loss_policies import appended_stop
from ..pipeline.media import load_image, media_of
from ..pipeline.policies import image_budgets, sample_tokens, shrunk_budgets
from ..processor.media_tokens import image_tokens, pixel_budget, video_tokens
from ..processor.profile import profile_of
from ..processor.render import renderer_for
from .collator import STRATEGIES
from .headers import file_header_size, header_size


def _image_size(value: Any, where: str) -> tuple[int, int]:
    """``(height, width)`` of an image item, reading only the header of a file or bytes."""
    if isinstance(value, Image.Image):
        return value.height, value.width
    if isinstance(value, (str, os.PathLike)):
        try:  # JPEG and PNG headers parsed directly (PIL's size, a few µs)
            size = file_header_size(value)
        except OSError:  # not a local file (a URL, base64...): load_image below
            pass
        else:
            if size is not None:
                return size
            with Image.open(value) as image:
                return image.height, image.width
    if isinstance(value, (bytes, bytearray)):
        size = header_size(value)
        if size is not None:
            return size
        with Image.open(io.BytesIO(value)) as image:
            return image.height, image.width
    if hasattr(value, "shape") and len(value.shape) in (2, 3):
        shape = value.shape
        channels_first = len(shape) == 3 and shape[0] in (1, 3, 4) and shape[-1] not in (1, 3, 4)
        return (shape[1], shape[2]) if channels_first else (shape[0], shape[1])
    image = load_image(value, where)
    return image.height, image.width


def _video_shape(value: Any) -> tuple[int, int, int]:
    """``(frames, height, width)`` of a video item (an array or a list of frames)."""
    if isinstance(value, (list, tuple)):
        height, width = _image_size(value[0], "video frame")
        return len(value), height, width
    shape = np.shape(value)
    if len(shape) != 4:
        raise OptionError(f"cannot estimate the length of a video given as {type(value).__name__}")
    channels_first = shape[1] in (1, 3, 4) and shape[-1] not in (1, 3, 4)
    return (shape[0], shape[2], shape[3]) if channels_first else (shape[0], shape[1], shape[2])


class LengthEstimator:
    """``estimator(example) -> tokens``: the rendered conversation's text tokens plus the
    tokens each image or video becomes under the processor's resize rule (Qwen image and
    video processors), read from image headers and array shapes, no pixels processed.
    Picklable; checked against the real lengths by
    :class:`~vlm_collate.packing.PackedCollator` (``length_estimator=``). Image budgets
    count as the collate call applies them: ``min_pixels``/``max_pixels`` (here or in
    ``options``), a row's or an image item's own, and with ``options.shrink_media`` and
    ``options.max_length`` the length after shrinking (docs/formats.md, Media budgets)."""

    def __init__(
        self,
        processor: Any,
        format: str = "auto",
        close_last_reply: Any = "auto",
        *,
        min_pixels: int | None = None,
        max_pixels: int | None = None,
        options: CollateOptions | Mapping[str, Any] | None = None,
    ):
        self.processor = processor
        # Checked like every option; keywords given here override ``options`` (a
        # CollateOptions or the keyword dict of a collator, e.g. ``VLMCollator.options``).
        given = {
            "format": format if format != "auto" else None,
            "close_last_reply": close_last_reply if close_last_reply != "auto" else None,
            "min_pixels": min_pixels,
            "max_pixels": max_pixels,
        }
        given = {k: v for k, v in given.items() if v is not None}
        if isinstance(options, Mapping):
            options = collate_options(**options)
        self.options = collate_options(options, **given)
        self.format = self.options.format
        # The stop token appended after a last reply the template does not close counts.
        self.close_last_reply = self.options.close_last_reply
        # The image budget (the options' min_pixels/max_pixels) as the processor applies it.
        self.budget = pixel_budget(processor, self.options.min_pixels, self.options.max_pixels)

    def image_tokens(self, height: int, width: int) -> int:
        """Tokens of one image of ``height`` x ``width`` pixels under the budget."""
        return image_tokens(self.processor, height, width, getattr(self, "budget", None))

    def video_tokens(self, frames: int, height: int, width: int) -> int:
        """Tokens of one video of ``frames`` frames of ``height`` x ``width`` pixels (the
        Qwen video processor's rule; frames are not sampled)."""
        return video_tokens(self.processor, frames, height, width)

    def __call__(self, example: Any, index: int = 0) -> int:
        conversation, text = self._rendered(example, index)
        tokens = len(profile_of(self.processor).tokenizer(text)["input_ids"])
        return self._total(example, index, conversation, tokens)

    def batch(self, examples: Sequence[Any], indices: Sequence[int]) -> list[int]:
        """``[self(e, i) for e, i in zip(examples, indices)]``, equal row by row, with every
        rendered text tokenized in one call of the fast tokenizer (the Rust backend's
        batch encode, without offsets), not one call per row."""
        return self.measure_batch(examples, indices)[0]

    def measure_batch(
        self, examples: Sequence[Any], indices: Sequence[int]
    ) -> tuple[list[int], list[int]]:
        """``(lengths, vision)``: :meth:`batch`'s lengths and each example's vision tokens
        (:meth:`vision`), from one rendering of each example."""
        profile = profile_of(self.processor)
        form = getattr(self, "format", "auto")
        conversations = [conversation_of(e, i, form) for e, i in zip(examples, indices)]
        texts = renderer_for(profile).batch(conversations)  # the template's variables once
        counts = text_token_counts(profile.tokenizer, texts)
        measured = [
            self._measure(e, i, conversation, n)
            for e, i, conversation, n in zip(examples, indices, conversations, counts)
        ]
        return [m[0] for m in measured], [m[1] for m in measured]

    def vision(self, example: Any, index: int = 0) -> int:
        """The tokens the example's images and videos become in the sequence (budgets and
        shrinking applied as for its length): the vision tower's cost, in tokens (the
        tower sees the merge kernel's patches per token, e.g. 4 for Qwen2.5-VL), for
        ``PackedBatchSampler(..., balance="vision")``."""
        conversation, text = self._rendered(example, index)
        tokens = len(profile_of(self.processor).tokenizer(text)["input_ids"])
        return self._measure(example, index, conversation, tokens)[1]

    def _rendered(self, example: Any, index: int) -> tuple[list[dict[str, Any]], str]:
        """The row's conversation and the text the chat template renders for it."""
        conversation = conversation_of(example, index, getattr(self, "format", "auto"))
        return conversation, renderer_for(profile_of(self.processor))(conversation)

    def _total(self, example: Any, index: int, conversation: Any, text_tokens: int) -> int:
        """The sample's length from its rendered text's ``text_tokens``."""
        return self._measure(example, index, conversation, text_tokens)[0]

    def _measure(
        self, example: Any, index: int, conversation: Any, text_tokens: int
    ) -> tuple[int, int]:
        """``(length, vision tokens)`` from the rendered text's ``text_tokens``: the
        appended stop token, each image's tokens (header sizes, budgets, shrinking) and
        each video's; vision tokens are the images' and videos' tokens alone."""
        profile = profile_of(self.processor)
        tokens = text_tokens
        tokens += appended_stop(profile, conversation, getattr(self, "close_last_reply", "auto"))
        media = media_of(conversation, index, ("image", "video"))
        sizes = [
            _image_size(value, f"sample {index}, image {k}") for k, value in enumerate(media.images)
        ]
        options = getattr(self, "options", None) or collate_options()
        budgets = image_budgets(profile, options, example, conversation, index) if sizes else []
        if options.shrink_media and options.max_length is not None:
            shrunk = shrunk_budgets(profile, tokens, sizes, budgets, options.max_length)
            budgets = shrunk[0] if shrunk is not None else budgets
        with_images = sample_tokens(profile, tokens, sizes, budgets)
        # each image's placeholder was one of the text tokens: it becomes the image's tokens
        vision = with_images - tokens + len(sizes)
        tokens = with_images
        frames = frame_budgets(options, example, conversation, index) if media.videos else []
        rates = fps_budgets(options, example, conversation, index) if media.videos else []
        for value, max_frames, (fps, rate) in zip(media.videos, frames, rates):
            # frames sampled as the collator does (max_frames, fps at the source rate)
            shape = _video_shape(value)
            count = video_tokens(self.processor, *shape, max_frames, fps, rate)
            tokens += count - 1
            vision += count
        return tokens, vision


def text_token_counts(tokenizer: Any, texts: Sequence[str]) -> list[int]:
    """``[len(tokenizer(t)["input_ids"]) for t in texts]`` in one call: a fast tokenizer's
    Rust backend encodes the batch (``encode_batch_fast``: no offsets, in parallel where
    the tokenizers library may use threads), with the special tokens ``tokenizer(t)``
    adds; any other tokenizer gets the whole list in one ``tokenizer(texts)`` call."""
    if not texts:
        return []
    fast = getattr(tokenizer, "is_fast", False)
    backend = getattr(tokenizer, "backend_tokenizer", None) if fast else None
    encode = getattr(backend, "encode_batch_fast", None) or getattr(backend, "encode_batch", None)
    if encode is not None:
        return [len(e.ids) for e in encode(list(texts), add_special_tokens=True)]
    return [len(ids) for ids in tokenizer(list(texts))["input_ids"]]


class PackedBatchSampler:
    """A ``batch_sampler`` for ``DataLoader`` whose batches fill ``rows_per_batch`` rows
    of ``max_length`` tokens each, for :class:`~vlm_collate.packing.PackedCollator`.

    Per epoch (``set_epoch``), the indices are shuffled with ``seed + epoch`` (or kept in
    order with ``shuffle=False``), cut into windows of ``window`` samples (default
    100,000), and each window is packed by the engine (first- or best-fit decreasing)
    into rows; groups of ``rows_per_batch`` rows are the batches. Batches are dealt to
    ranks in rounds of ``num_replicas``: with ``balance="tokens"`` (default) a round holds
    batches of similar token counts, with ``balance="vision"`` of similar vision patches
    (``vision``: patches or vision tokens per sample, e.g. the ``vision_length`` column of
    :func:`~vlm_collate.packing.add_lengths`), with ``balance=None`` consecutive ones;
    rounds are shuffled. ``lengths`` may be the ``datasets.Dataset`` that ``add_lengths``
    returned: its ``length`` column is read, and with ``balance="vision"`` its
    ``vision_length`` column (as numpy arrays). Ranks get disjoint samples and the same
    number of batches (the last incomplete round is dropped with ``drop_last=True``;
    otherwise its missing batches repeat the epoch's first ones, as
    ``DistributedSampler`` repeats samples). A sample longer than ``max_length`` is its
    own batch (the collator's ``on_overflow`` decides).

    Holds numbers only (numpy arrays): each rank keeps only its share of an epoch's plan,
    built once per epoch (``len()`` is then O(1)). ``state_dict()`` /
    ``load_state_dict()`` resume mid-epoch exactly (torchdata's ``StatefulDataLoader``
    calls them). Picklable for workers.
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        max_length: int,
        *,
        rows_per_batch: int = 1,
        shuffle: bool = True,
        seed: int = 0,
        num_replicas: int | None = None,
        rank: int | None = None,
        drop_last: bool = False,
        strategy: str = "best_fit",
        window: int | None = None,
        balance: str | None = "tokens",
        vision: Sequence[int] | np.ndarray | None = None,
    ):
        if hasattr(lengths, "column_names"):  # a datasets.Dataset from add_lengths
            lengths, vision = _dataset_columns(lengths, vision, balance)
        self.lengths = _column(lengths, "lengths")
        for name, value in (("max_length", max_length), ("rows_per_batch", rows_per_batch)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise OptionError(f"{name} must be a positive integer, got {value!r}")
        if strategy not in STRATEGIES:
            raise OptionError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        if balance not in BALANCES:
            raise OptionError(f"balance must be one of {BALANCES}, got {balance!r}")
        self.vision = None if vision is None else _column(vision, "vision")
        if self.vision is not None and len(self.vision) != len(self.lengths):
            raise OptionError(
                f"vision has {len(self.vision)} values for {len(self.lengths)} lengths"
            )
        if balance == "vision" and self.vision is None:
            raise OptionError(
                'balance="vision" needs the vision patches per sample (vision=...: the '
                "vision_length column of add_lengths)"
            )
        if num_replicas is None or rank is None:
            world, me = _distributed()
            num_replicas = world if num_replicas is None else num_replicas
            rank = me if rank is None else rank
        if not 0 <= rank < num_replicas:
            raise OptionError(f"rank must be in [0, {num_replicas}), got {rank}")
        self.max_length = int(max_length)
        self.rows_per_batch = int(rows_per_batch)
        self.shuffle, self.seed, self.epoch = bool(shuffle), int(seed), 0
        self.num_replicas, self.rank = int(num_replicas), int(rank)
        self.drop_last, self.strategy, self.balance = bool(drop_last), strategy, balance
        self.window = int(window) if window else DEFAULT_WINDOW
        self._plan: tuple[int, np.ndarray, np.ndarray] | None = None
        self._start = 0  # batches of the epoch already yielded (resume)

    def set_epoch(self, epoch: int) -> None:
        """Reshuffles for ``epoch`` (call it before each epoch, like ``DistributedSampler``)."""
        if int(epoch) != self.epoch:
            self.epoch, self._start = int(epoch), 0

    def _packed_rows(self, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(indices, bounds, costs)``: every sample in packed row order (int32 when it
        fits), row ``i`` being ``indices[bounds[i]:bounds[i + 1]]``, and each row's
        balance cost (its tokens capped at ``max_length``, or its vision patches). The
        rounds of batches are shuffled later, so rows are not. Memory: one index array
        (the shuffled order, packed in place window by window) and per-row arrays."""
        n = len(self.lengths)
        small = np.int32 if n < 2**31 else np.int64
        order = np.arange(n, dtype=small)
        if self.shuffle:  # in place, in the small dtype: no int64 copy of every index
            rng.shuffle(order)
        ends, costs = [], []
        for start in range(0, n, self.window):
            chunk = order[start : start + self.window]
            capped = np.minimum(self.lengths[chunk], self.max_length)
            inside, bounds = engine.pack_bins(capped, self.max_length, self.strategy)
            starts = bounds[:-1]
            if self.balance == "vision":
                costs.append(np.add.reduceat(self.vision[chunk][inside], starts))
            elif self.balance == "tokens":
                costs.append(np.add.reduceat(capped[inside], starts))
            chunk[:] = chunk[inside]  # the window in packed order, in place
            ends.append(bounds[1:] + start)
        row_bounds = np.concatenate([np.zeros(1, np.int64), *ends])
        row_costs = np.concatenate(costs) if costs else np.zeros(len(row_bounds) - 1, np.int64)
        return order, row_bounds, row_costs

    def _rank_plan(self) -> tuple[np.ndarray, np.ndarray]:
        """This rank's batches of the epoch: ``(indices, bounds)`` (cached per epoch)."""
        if self._plan is not None and self._plan[0] == self.epoch:
            return self._plan[1], self._plan[2]
        packed, batch_bounds, rounds = self.epoch_rounds()
        mine = rounds[:, self.rank]
        del rounds
        indices, bounds = _segments_in_order(packed, batch_bounds, mine)
        self._plan = (self.epoch, indices, bounds)
        return indices, bounds

    def epoch_rounds(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The whole epoch's plan, the same on every rank: ``(packed, batch_bounds,
        rounds)``: batch ``b`` is ``packed[batch_bounds[b]:batch_bounds[b + 1]]`` and
        step ``s`` gives batch ``rounds[s, rank]`` to each rank (for simulations: every
        rank's step costs without building each rank's share)."""
        rng = np.random.default_rng(self.seed + self.epoch)
        packed, row_bounds, row_costs = self._packed_rows(rng)
        batch_bounds = row_bounds[:: self.rows_per_batch]
        if batch_bounds[-1] != row_bounds[-1]:
            batch_bounds = np.append(batch_bounds, row_bounds[-1])
        count, r = len(batch_bounds) - 1, self.num_replicas
        # Rounds of r batches, one per rank: by cost (balanced) or in order, then shuffled.
        if self.balance is not None and count > r:
            first_rows = np.arange(0, len(row_costs), self.rows_per_batch)
            sums = np.add.reduceat(row_costs, first_rows) if len(row_costs) else first_rows
            ranked = np.argsort(sums, kind="stable")
            del sums
        else:
            ranked = np.arange(count)
        del row_costs
        full = count // r * r
        if self.drop_last or count % r == 0:
            rounds = ranked[:full].reshape(-1, r)
        else:
            extra = np.arange(r - count % r) % max(count, 1)
            rounds = np.concatenate([ranked, extra]).reshape(-1, r)
        if self.shuffle and len(rounds) > 1:
            rounds = rounds[rng.permutation(len(rounds))]
        return packed, batch_bounds, rounds

    def all_batches(self) -> list[list[int]]:
        """The epoch's batches over every rank, round by round (rank 0's batch first).
        Builds every rank's share: for checks and simulations, not for training."""
        shares = []
        for rank in range(self.num_replicas):
            other = copy.copy(self)
            other.rank, other._plan = rank, None
            shares.append(list(other._batches(0)))
        return [b for round_ in zip(*shares) for b in round_]

    def _batches(self, start: int) -> Iterator[list[int]]:
        indices, bounds = self._rank_plan()
        for i in range(start, len(bounds) - 1):
            yield indices[bounds[i] : bounds[i + 1]].tolist()

    def __iter__(self) -> Iterator[list[int]]:
        start, self._start = self._start, 0
        for i, batch in enumerate(self._batches(start), start + 1):
            self._yielded = i
            yield batch
        self._yielded = 0

    def __len__(self) -> int:
        return len(self._rank_plan()[1]) - 1

    def state_dict(self) -> dict[str, int]:
        """Where this rank is in the epoch: ``{"epoch", "seed", "yielded"}``."""
        return {"epoch": self.epoch, "seed": self.seed, "yielded": getattr(self, "_yielded", 0)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """The next ``iter()`` continues after the batches ``state`` had yielded."""
        if int(state["seed"]) != self.seed:
            raise OptionError(
                f"this sampler's seed is {self.seed}, the saved state's {state['seed']}: "
                "resume with the seed the run started with"
            )
        self.set_epoch(int(state["epoch"]))
        self._start = self._yielded = int(state["yielded"])


DEFAULT_WINDOW = 100_000
"""Samples packed together by :class:`PackedBatchSampler` (windows bound the plan's
working memory; windows of this size lose well under 1% of fill)."""

BALANCES = ("tokens", "vision", None)


def _column(values: Any, name: str) -> np.ndarray:
    """A column of non-negative integers as int64 (no copy when it is one already)."""
    array = engine.as_int64(values, name).reshape(-1)
    if len(array) and array.min() < 0:
        raise OptionError(f"{name} must be >= 0")
    return array


def _dataset_columns(dataset: Any, vision: Any, balance: str | None) -> tuple[Any, Any]:
    """The ``length`` column of a dataset :func:`~vlm_collate.packing.add_lengths` gave,
    and (when ``vision`` is not given and ``balance="vision"``) its ``vision_length``."""
    names = dataset.column_names
    if "length" not in names:
        raise OptionError(
            f"the dataset has no 'length' column (its columns: {names}); add it with "
            "vlm_collate.packing.add_lengths(dataset, processor) or pass the lengths"
        )
    numbers = dataset.with_format("numpy")
    if vision is None and balance == "vision":
        if "vision_length" not in names:
            raise OptionError(
                "balance='vision' needs the dataset's 'vision_length' column (add_lengths "
                "adds it unless vision_column=None) or vision=..."
            )
        vision = numbers["vision_length"]
    return numbers["length"], vision


def _segments_in_order(
    values: np.ndarray, bounds: np.ndarray, order: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The segments ``values[bounds[i]:bounds[i + 1]]`` for ``i`` in ``order``,
    concatenated, with their new bounds; vectorised (no Python loop over segments)."""
    sizes = np.diff(bounds)[order]
    new_bounds = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    shift = np.repeat(bounds[:-1][order] - new_bounds[:-1], sizes)
    return values[np.arange(new_bounds[-1], dtype=np.int64) + shift], new_bounds


def _distributed() -> tuple[int, int]:
    """``(world size, rank)`` of an initialised ``torch.distributed`` group, else (1, 0)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size(), dist.get_rank()
    return 1, 0


def estimated_lengths(dataset: Sequence[Any], processor: Any) -> np.ndarray:
    """The estimated length of every sample of ``dataset`` (see :class:`LengthEstimator`)."""
    estimate = LengthEstimator(processor)
    return np.fromiter(
        (estimate(dataset[i], i) for i in range(len(dataset))), dtype=np.int64, count=len(dataset)
    )


__all__ = ["LengthEstimator", "PackedBatchSampler", "estimated_lengths"]
