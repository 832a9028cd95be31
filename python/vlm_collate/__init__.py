"""vlm_collate: training batches for vision- and audio-language models.

Collate functions named as in NeMo AutoModel's ``collate_fns`` module, with
exact assistant labels and a Rust engine for span search, label masking,
placeholder expansion and padding.
"""

from __future__ import annotations

import logging
import sys

from . import families
from .collator import COLLATE_FNS, VLMCollator, get_collate_fn
from .errors import (
    CollateError,
    MediaError,
    OptionError,
    SampleError,
    SampleTooLongError,
    TemplateError,
)
from .families.default import default_collate_fn
from .families.kimi_k25 import kimi_k25_vl_collate_fn
from .families.kimi_vl import kimi_vl_collate_fn
from .families.nemotron_parse import nemotron_parse_collate_fn
from .families.phi4_mm import phi4_mm_collate_fn
from .families.qwen2_5_vl import qwen2_5_collate_fn
from .families.qwen3_omni import qwen3_omni_collate_fn
from .formats.conversation import conversation_of, extract_assistant_text, format_of
from .formats.rows import with_row_index
from .options import CollateOptions
from .packing.collator import PackedCollator, PackedReport
from .packing.lengths import add_lengths
from .packing.positions import RopeConfig, rope_position_ids
from .packing.sampler import LengthEstimator, PackedBatchSampler
from .packing.stream import PackedIterableDataset
from .pipeline.expand import expand_image_tokens, image_token_counts
from .pipeline.labels import build_labels
from .pipeline.loss_policies import weighted_loss
from .pipeline.patterns import find_pattern_indices
from .processor.check import TemplateReport, check_template
from .processor.tokens import decode_single_token
from .report import Batch, BatchReport

# ``vlm_collate.models.<module>`` (the family modules' former home) keeps working.
sys.modules[f"{__name__}.models"] = families
for _module in families.MODULES:
    sys.modules[f"{__name__}.models.{_module.__name__.rsplit('.', 1)[1]}"] = _module

logger = logging.getLogger("vlm_collate")
# No NullHandler: until the application configures logging, Python's last-resort handler
# prints this library's warnings (dropped or unlabeled samples) to stderr, so a trainer
# that never configures logging still sees them.

# Seed-compatible private names.
_find_pattern_indices = find_pattern_indices
_extract_assistant_text = extract_assistant_text
_decode_single_token = decode_single_token
_expand_image_tokens = expand_image_tokens

__all__ = [
    "LengthEstimator",
    "PackedBatchSampler",
    "PackedIterableDataset",
    "PackedCollator",
    "PackedReport",
    "RopeConfig",
    "rope_position_ids",
    "COLLATE_FNS",
    "Batch",
    "BatchReport",
    "CollateOptions",
    "CollateError",
    "MediaError",
    "OptionError",
    "SampleError",
    "SampleTooLongError",
    "TemplateError",
    "TemplateReport",
    "VLMCollator",
    "default_collate_fn",
    "get_collate_fn",
    "kimi_k25_vl_collate_fn",
    "kimi_vl_collate_fn",
    "nemotron_parse_collate_fn",
    "phi4_mm_collate_fn",
    "qwen2_5_collate_fn",
    "qwen3_omni_collate_fn",
    "build_labels",
    "weighted_loss",
    "add_lengths",
    "check_template",
    "decode_single_token",
    "expand_image_tokens",
    "extract_assistant_text",
    "conversation_of",
    "format_of",
    "with_row_index",
    "find_pattern_indices",
    "image_token_counts",
    "logger",
]
