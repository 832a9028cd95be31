"""Packed training: :class:`PackedCollator` (whole documents back to back in rows),
model-free rotary positions (:mod:`.positions`), and length estimation and the packed
batch sampler (:mod:`.sampler`)."""

from .collator import STRATEGIES, PackedCollator, PackedReport, packed_batch
from .positions import RopeConfig, rope_config, rope_position_ids
from .sampler import LengthEstimator, PackedBatchSampler, estimated_lengths

__all__ = [
    "STRATEGIES",
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
