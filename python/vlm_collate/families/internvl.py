"""InternVL: ``<IMG_CONTEXT>`` tiles between ``<img>`` and ``</img>``."""

from __future__ import annotations

from typing import Any

from ..options import seed_options
from ..pipeline.encode import Quirks, collate
from ..pipeline.fast_tiles import tiled_call
from ..processor.family import family
from ..processor.profile import profile_of
from ..report import Batch


@family("internvl", classes=("InternVLProcessor",), model_types=("internvl",))
def internvl_collate_fn(examples: list, processor: Any, **options: Any) -> Batch:
    """Batch for InternVL: ``input_ids``, ``attention_mask``, ``labels``, and
    ``pixel_values`` (one row per tile) when the batch holds images or videos.
    Options: see :class:`~vlm_collate.CollateOptions`."""
    opts = seed_options(**options)
    # The tiled fast path: the processor call reproduced in one pass where it applies.
    return collate(examples, processor, opts, Quirks(call=tiled_call(profile_of(processor), opts)))
