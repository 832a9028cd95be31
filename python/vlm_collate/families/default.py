"""Any processor with a chat template: the shared encode step, nothing declared."""

from __future__ import annotations

from typing import Any

import torch

from ..options import dtype_option, seed_options
from ..pipeline.encode import Quirks, collate
from ..processor.family import family
from ..report import Batch


@family("default")
def default_collate_fn(
    examples: list,
    processor: Any,
    max_length: int | None = None,
    pixel_dtype: torch.dtype | None = torch.bfloat16,
    **options: Any,
) -> Batch:
    """Batch for any processor with a chat template: each conversation rendered by it,
    its media loaded, one processor call (``text``, ``images``/``videos`` per sample,
    ``audio``), media counts checked.

    Text-only batches work; ``pixel_values`` is cast to ``pixel_dtype`` only when
    present. No ``position_ids`` are made up: models with multi-axis rotary
    positions compute their own.
    """
    opts = seed_options(extra_names=("pixel_dtype",), max_length=max_length, **options)
    quirks = Quirks(pixel_dtype=dtype_option("pixel_dtype", pixel_dtype))
    return collate(examples, processor, opts, quirks)
