"""Finding a token pattern in a token sequence."""

from __future__ import annotations

from typing import Any

from . import engine
from .engine import as_int64


def find_pattern_indices(
    template: Any,
    pattern: Any,
    search_start_index: int = 0,
    allow_first_token_mismatch: bool = False,
) -> tuple[int, int]:
    """``(start, end)`` of the first occurrence of ``pattern`` in ``template`` at or
    after ``search_start_index``, or ``(-1, -1)``. Takes tensors, arrays or lists.

    With ``allow_first_token_mismatch``, a window whose first token differs but
    whose other tokens match also counts. Linear time in the template length.
    """
    haystack, needle = as_int64(template).reshape(-1), as_int64(pattern).reshape(-1)
    if search_start_index < 0:
        raise ValueError(f"search_start_index must be >= 0, got {search_start_index}")
    return engine.find_subsequence(
        haystack, needle, int(search_start_index), bool(allow_first_token_mismatch)
    )
