"""Gemma 3: ``<start_of_image>`` expanded to 256 soft tokens inside its block."""

from __future__ import annotations

from typing import Any

from ..options import seed_options
from ..pipeline.encode import Quirks, collate
from ..pipeline.fast_path import fast_call
from ..processor.family import family
from ..processor.profile import profile_of
from ..report import Batch


@family("gemma3", classes=("Gemma3Processor",), model_types=("gemma3",), fast_path=True)
def gemma3_collate_fn(examples: list, processor: Any, **options: Any) -> Batch:
    """Batch for Gemma 3: ``input_ids``, ``attention_mask``, ``labels``,
    ``token_type_ids`` (1 on image tokens, laid out with the ids) and ``pixel_values``
    when the batch holds images. Options: see :class:`~vlm_collate.CollateOptions`.
    Takes the fast path (docs/fast_path.md), pan-and-scan crops included."""
    opts = seed_options(**options)
    return collate(examples, processor, opts, Quirks(call=fast_call(profile_of(processor), opts)))
