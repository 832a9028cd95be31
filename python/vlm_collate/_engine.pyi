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

def pack_bins(lengths: I64, capacity: int, strategy: str = "best_fit") -> tuple[I64, I64]:
    """``(order, bin_offsets)``: documents longest first into bins of at most ``capacity``
    tokens (``"best_fit"`` or ``"first_fit"``); bin b is ``order[bin_offsets[b]:bin_offsets[b+1]]``."""

def packed_layout(
    doc_offsets: I64, order: I64, bin_offsets: I64, width: int, shift: bool = False
) -> tuple[I64, I64, I64, I64, I64]:
    """``(source (R, W), label_source (R, W), positions (R, W), cu_seq_lens, spans (D, 4))``:
    per column the index of its token and of its label in the documents' values (-1: padding
    or ignored), its position in its document, the segment boundaries, and per document
    ``(document, row, start, length)``."""

def rope_positions(
    values: I64,
    offsets: I64,
    family: str,
    spatial_merge_size: int,
    image_token_id: int,
    video_token_id: int,
    vision_start_token_id: int,
    image_grids: I64 | None = None,
    video_grids: I64 | None = None,
    video_seconds: list[float] = ...,
    tokens_per_second: float = 1.0,
    audio_token_id: int | None = None,
    audio_start_token_id: int | None = None,
    use_audio_in_video: bool = False,
) -> npt.NDArray[np.int64] | npt.NDArray[np.float32]:
    """``(3, total)`` rotary positions of each row, as the family's ``get_rope_index``."""
