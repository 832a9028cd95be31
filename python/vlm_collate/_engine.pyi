"""Type stub of the native engine (Rust, `rust/bindings.rs`).

Every array argument is a C-contiguous ``int64`` numpy array; anything else,
and any inconsistent argument, raises ``ValueError`` naming the argument,
the sample and the numbers. The GIL is released while the engine works.
"""

import numpy as np
import numpy.typing as npt

IGNORE_INDEX: int

I64 = npt.NDArray[np.int64]

def find_subsequence(
    haystack: I64, pattern: I64, start: int = 0, allow_first_token_mismatch: bool = False
) -> tuple[int, int]:
    """First ``(start, end)`` of ``pattern`` at or after ``start``, or ``(-1, -1)``."""

def labels_from_markers(
    input_ids: I64,
    attention_mask: I64,
    starts: list[list[int]],
    ends: list[list[int]],
    ignore_ids: list[int] = ...,
) -> tuple[I64, I64]:
    """``(labels (B, L), replies found per row (B,))`` from assistant-start/end-of-turn markers."""

def labels_from_contents(
    input_ids: I64,
    attention_mask: I64,
    reply_values: I64,
    reply_offsets: I64,
    replies_per_row: I64,
    stop_ids: list[int],
    headers: list[list[int]] = ...,
    ignore_ids: list[int] = ...,
) -> tuple[I64, I64]:
    """``(labels (B, L), replies located per row (B,))`` by searching each reply's tokens."""

def pad_rows(
    values: I64,
    offsets: I64,
    pad_value: int,
    padding_side: str = "right",
    max_length: int | None = None,
    pad_to_multiple_of: int | None = None,
) -> tuple[I64, I64]:
    """``(ids, attention_mask)``, both ``(B, L)``, from rows ``values[offsets[i]:offsets[i+1]]``."""

def unpad(input_ids: I64, attention_mask: I64) -> tuple[I64, I64]:
    """``(values, offsets)``: the attended tokens of each row."""

def expand_placeholders(
    input_ids: I64,
    attention_mask: I64,
    placeholder_id: int,
    counts: I64,
    counts_per_row: I64,
    pad_id: int,
    padding_side: str = "right",
) -> tuple[I64, I64]:
    """Padded ``(ids, attention_mask)`` with the i-th placeholder repeated ``counts[i]`` times."""

def tokens_per_grid(grids: I64, merge_kernel_size: tuple[int, int] = (2, 2)) -> I64:
    """``t * (h // mh) * (w // mw)`` per row of an ``(N, 3)`` grid array."""

def fitted_lengths(values: I64, offsets: I64, max_length: int, media_ids: list[int]) -> I64:
    """Per row, its length cut to ``max_length``, or -1 when media reach past ``max_length``."""
