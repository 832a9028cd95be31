"""Length-aware batching for packed training: sample lengths estimated without pixel
preprocessing, and a batch sampler that groups samples into batches that fill rows of
``max_length`` tokens, deterministic for a seed and sharded across ranks."""

from __future__ import annotations

import io
import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
from PIL import Image

from .. import engine
from ..errors import OptionError
from ..formats.conversation import conversation_of
from ..options import collate_options
from ..pipeline.loss_policies import appended_stop
from ..pipeline.media import load_image, media_of
from ..processor.media_tokens import image_tokens, video_tokens
from ..processor.profile import profile_of
from ..processor.render import renderer_for
from .collator import STRATEGIES


def _image_size(value: Any, where: str) -> tuple[int, int]:
    """``(height, width)`` of an image item, reading only the header of a file or bytes."""
    if isinstance(value, Image.Image):
        return value.height, value.width
    if isinstance(value, (str, os.PathLike)) and os.path.exists(value):
        with Image.open(value) as image:
            return image.height, image.width
    if isinstance(value, (bytes, bytearray)):
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
    :class:`~vlm_collate.packing.PackedCollator` (``length_estimator=``)."""

    def __init__(self, processor: Any, format: str = "auto", close_last_reply: Any = "auto"):
        self.processor = processor
        self.format = collate_options(format=format).format  # checked like every option
        # The stop token appended after a last reply the template does not close counts.
        self.close_last_reply = collate_options(close_last_reply=close_last_reply).close_last_reply

    def image_tokens(self, height: int, width: int) -> int:
        """Tokens of one image of ``height`` x ``width`` pixels."""
        return image_tokens(self.processor, height, width)

    def video_tokens(self, frames: int, height: int, width: int) -> int:
        """Tokens of one video of ``frames`` frames of ``height`` x ``width`` pixels (the
        Qwen video processor's rule; frames are not sampled)."""
        return video_tokens(self.processor, frames, height, width)

    def __call__(self, example: Any, index: int = 0) -> int:
        conversation = conversation_of(example, index, getattr(self, "format", "auto"))
        profile = profile_of(self.processor)
        text = renderer_for(profile)(conversation)
        tokens = len(profile.tokenizer(text)["input_ids"])
        tokens += appended_stop(profile, conversation, getattr(self, "close_last_reply", "auto"))
        media = media_of(conversation, index, ("image", "video"))
        for k, value in enumerate(media.images):
            height, width = _image_size(value, f"sample {index}, image {k}")
            tokens += self.image_tokens(height, width) - 1
        for value in media.videos:
            tokens += self.video_tokens(*_video_shape(value)) - 1
        return tokens


class PackedBatchSampler:
    """A ``batch_sampler`` for ``DataLoader`` whose batches fill ``rows_per_batch`` rows
    of ``max_length`` tokens each, for :class:`~vlm_collate.packing.PackedCollator`.

    Per epoch (``set_epoch``), the indices are shuffled with ``seed + epoch`` (or kept in
    order with ``shuffle=False``), cut into windows of ``window`` samples, and each
    window is packed by the engine (first- or best-fit decreasing) into rows; groups of
    ``rows_per_batch`` rows are the batches, shuffled again. Every rank computes the
    same batches and takes every ``num_replicas``-th one from ``rank``: ranks get
    disjoint samples and the same number of batches (the last incomplete round is
    dropped with ``drop_last=True``; otherwise its missing batches repeat the epoch's
    first ones, as ``DistributedSampler`` repeats samples). A sample longer than
    ``max_length`` is its own batch (the collator's ``on_overflow`` decides). Holds
    only numbers: picklable for workers.
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
    ):
        self.lengths = engine.as_int64(lengths, "lengths").reshape(-1)
        if (self.lengths < 0).any():
            raise OptionError("lengths must be >= 0")
        for name, value in (("max_length", max_length), ("rows_per_batch", rows_per_batch)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise OptionError(f"{name} must be a positive integer, got {value!r}")
        if strategy not in STRATEGIES:
            raise OptionError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
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
        self.drop_last, self.strategy = bool(drop_last), strategy
        self.window = int(window) if window else len(self.lengths) or 1

    def set_epoch(self, epoch: int) -> None:
        """Reshuffles for ``epoch`` (call it before each epoch, like ``DistributedSampler``)."""
        self.epoch = int(epoch)

    def all_batches(self) -> list[list[int]]:
        """The epoch's batches over every rank, in order."""
        rng = np.random.default_rng(self.seed + self.epoch)
        n = len(self.lengths)
        order = rng.permutation(n) if self.shuffle else np.arange(n)
        capped = np.minimum(self.lengths, self.max_length)
        rows: list[list[int]] = []
        for start in range(0, n, self.window):
            chunk = order[start : start + self.window]
            packed, bounds = engine.pack_bins(capped[chunk], self.max_length, self.strategy)
            rows += [chunk[packed[a:b]].tolist() for a, b in zip(bounds[:-1], bounds[1:])]
        if self.shuffle:
            rows = [rows[i] for i in rng.permutation(len(rows))]
        k = self.rows_per_batch
        return [sum(rows[i : i + k], []) for i in range(0, len(rows), k)]

    def _rank_batches(self) -> list[list[int]]:
        batches = self.all_batches()
        r = self.num_replicas
        if self.drop_last:
            batches = batches[: len(batches) // r * r]
        elif batches and len(batches) % r:
            missing = r - len(batches) % r
            batches += [batches[i % len(batches)] for i in range(missing)]
        return batches[self.rank :: r]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self._rank_batches())

    def __len__(self) -> int:
        return len(self._rank_batches())


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
