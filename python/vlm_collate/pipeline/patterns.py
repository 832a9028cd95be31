"""Finding a token pattern in a token sequence."""

from __future__ import annotations

import operator
from typing import Any

from .. import engine
from ..engine import as_int64
from ..errors import EngineError


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
    return engine.find_subsequence(
        haystack, needle, _start_index(search_start_index), bool(allow_first_token_mismatch)
    )


_INT64_MAX = 2**63 - 1


def _start_index(value: Any) -> int:
    """``value`` as a start index: an integer (a numpy integer or an integer 0-d tensor
    too) from 0 to int64's maximum; a float, a bool or a larger integer is refused,
    never truncated."""
    try:
        index = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        index = None
    if index is None or index > _INT64_MAX:
        raise EngineError(f"search_start_index must be an integer within int64, got {value!r}")
    if index < 0:
        raise EngineError(f"search_start_index must be >= 0, got {index}")
    return index
