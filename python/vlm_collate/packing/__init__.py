"""Packed training: :class:`PackedCollator` (whole documents back to back in rows),
model-free rotary positions (:mod:`.positions`), and length estimation and the packed
batch sampler (:mod:`.sampler`), lengths on ``datasets`` (:mod:`.lengths`) and packing
a stream (:mod:`.stream`)."""

from .collator import STRATEGIES, PackedCollator, PackedReport, packed_batch
from .lengths import add_lengths
from .positions import RopeConfig, rope_config, rope_position_ids
from .sampler import LengthEstimator, PackedBatchSampler, estimated_lengths
from .stream import EvenLoader, OnlinePacker, PackedIterableDataset, online_batches

__all__ = [
    "STRATEGIES",
    "EvenLoader",
    "OnlinePacker",
    "PackedIterableDataset",
    "add_lengths",
    "online_batches",
    "LengthEstimator",
    "PackedBatchSampler",
    "PackedCollator",
    "PackedReport",
    "RopeConfig",
    "estimated_lengths",
    "packed_batch",
    "rope_config",
    "rope_position_ids",
]
