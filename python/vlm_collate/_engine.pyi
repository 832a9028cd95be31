"""Type stub of the native engine (Rust, `rust/bindings/`).

Every array argument is a C-contiguous ``int64`` numpy array; anything else, and any
inconsistent argument, raises :class:`vlm_collate.errors.EngineError` (a ``CollateError``,
so a ``ValueError``) naming the argument, the sample and the numbers. Ids, positions and
sizes are Python (or numpy) integers within int64: a float, a bool or a larger integer
is refused the same way, never truncated. Paired arrays (``input_ids`` and
``attention_mask``) must have exactly the same shape; offsets must start at 0, never
decrease and end at the length of their values. Any id (up to ``2**63 - 1``, negative
ones too) is an id; sizes are checked before anything is allocated, and no output may
hold more than ``MAX_ELEMENTS`` values. The GIL is released while the engine works; a
panic (a bug) is raised as an ``EngineError`` too, never an abort.
"""

from typing import Literal, final, overload

import numpy as np
import numpy.typing as npt

IGNORE_INDEX: int
MAX_ELEMENTS: int
"""The most values one output array may hold (2**28); a larger request is an EngineError
naming the argument behind it, never an abort."""

__all__ = [
    "IGNORE_INDEX",
    "MAX_ELEMENTS",
    "RopeSpec",
    "expand_placeholders",
    "find_subsequence",
    "fit_rows",
    "fitted_lengths",
    "labels_from_contents",
    "labels_from_markers",
    "pack_bins",
    "packed_layout",
    "pad_rows",
    "padded_rope_positions",
    "rope_positions",
    "tokens_per_grid",
    "unpad",
    "pixel_rows",
    "write_pixel_values",
    "write_planes",
    "write_tiles",
    "write_video_pixel_values",
]

_I64 = npt.NDArray[np.int64]

def find_subsequence(
    haystack: _I64, pattern: _I64, start: int = 0, allow_first_token_mismatch: bool = False
) -> tuple[int, int]:
    """First ``(start, end)`` of ``pattern`` at or after ``start``, or ``(-1, -1)``."""

@overload
def labels_from_markers(
    input_ids: _I64,
    attention_mask: _I64,
    starts: list[list[int]],
    ends: list[list[int]],
    ignore_ids: list[int] = ...,
    count_headers: Literal[False] = ...,
) -> tuple[_I64, _I64]:
    """``(labels (B, L), replies found per row (B,))`` from assistant-start/end-of-turn markers."""

@overload
def labels_from_markers(
    input_ids: _I64,
    attention_mask: _I64,
    starts: list[list[int]],
    ends: list[list[int]],
    ignore_ids: list[int] = ...,
    *,
    count_headers: Literal[True],
) -> tuple[_I64, _I64, _I64]:
    """``(labels (B, L), replies found per row (B,), header positions per row (B,))``: the
    third counts, in the same scan, the attended positions where any start marker begins
    (whole inside the row), inside replies and overlapping other markers included."""

def labels_from_contents(
    input_ids: _I64,
    attention_mask: _I64,
    reply_values: _I64,
    reply_offsets: _I64,
    replies_per_row: _I64,
    stop_ids: list[int],
    headers: list[list[int]] = ...,
    ignore_ids: list[int] = ...,
) -> tuple[_I64, _I64]:
    """``(labels (B, L), replies located per row (B,))`` by searching each reply's tokens."""

def pad_rows(
    values: _I64,
    offsets: _I64,
    pad_value: int,
    padding_side: str = "right",
    max_length: int | None = None,
    pad_to_multiple_of: int | None = None,
) -> tuple[_I64, _I64]:
    """``(ids, attention_mask)``, both ``(B, L)``, from rows ``values[offsets[i]:offsets[i+1]]``."""

def unpad(input_ids: _I64, attention_mask: _I64) -> tuple[_I64, _I64]:
    """``(values, offsets)``: the attended tokens of each row."""

def expand_placeholders(
    input_ids: _I64,
    attention_mask: _I64,
    placeholder_id: int,
    counts: _I64,
    counts_per_row: _I64,
    pad_id: int,
    padding_side: str = "right",
) -> tuple[_I64, _I64]:
    """Padded ``(ids, attention_mask)`` with the i-th placeholder repeated ``counts[i]`` times."""

def tokens_per_grid(grids: _I64, merge_kernel_size: tuple[int, int] = ...) -> _I64:
    """``t * (h // mh) * (w // mw)`` per row of an ``(N, 3)`` grid array."""

def fitted_lengths(
    values: _I64,
    offsets: _I64,
    max_length: int,
    media_ids: list[int],
    block_open_ids: list[int] = ...,
    block_close_ids: list[int] = ...,
) -> _I64:
    """Per row ``values[offsets[i]:offsets[i+1]]``: its length when it fits in ``max_length``,
    ``max_length`` when it can be cut there, or -1 when the cut would split or drop a media
    block (the sample must then be dropped, never cut).

    A media block runs from an id of ``block_open_ids`` through the next id of
    ``block_close_ids``, whatever lies between (placeholders, row and column tokens); an id
    in both lists closes an open block and opens a shut one; a block never closed runs to
    the end of the row. Outside delimited blocks (and for families without delimiters), a
    run of ``media_ids`` is a block: such families list their row/column tokens among the
    media ids. The two delimiter lists are given together or not at all. A row may be cut
    only if every media block ends at or before the cut.
    """

def fit_rows(
    array: _I64, row_lengths: _I64, length: int, fill: int, padding_side: str = "right"
) -> _I64:
    """``(B, length)`` from a right-padded ``(B, L)`` ``array``: row i's first
    ``min(row_lengths[i], length)`` values at the start (``padding_side="right"``) or the end
    (``"left"``) of output row i, ``fill`` everywhere else. ``row_lengths`` is ``(B,)`` with
    ``0 <= row_lengths[i] <= L``; ``B * length`` may not exceed ``MAX_ELEMENTS``."""

def pack_bins(lengths: _I64, capacity: int, strategy: str = "best_fit") -> tuple[_I64, _I64]:
    """``(order, bin_offsets)``: documents longest first into bins of at most ``capacity``
    tokens (``"best_fit"`` or ``"first_fit"``); bin b is
    ``order[bin_offsets[b]:bin_offsets[b+1]]``."""

def packed_layout(
    doc_offsets: _I64, order: _I64, bin_offsets: _I64, width: int, shift: bool = False
) -> tuple[_I64, _I64, _I64, _I64, _I64]:
    """``(source (R, W), label_source (R, W), positions (R, W), cu_seq_lens, spans (D, 4))``:
    per column the index of its token and of its label in the documents' values (-1: padding
    or ignored), its position in its document, the segment boundaries, and per document
    ``(document, row, start, length)``."""

@final
class RopeSpec:
    """The config values of a family's rotary positions, converted and checked once:
    ``family`` (``"qwen2_vl"``, ``"qwen2_5_vl"``, ``"qwen3_vl"`` or ``"qwen3_omni"``), the
    vision ``spatial_merge_size`` (at least 1), the media token ids, the spacing of video
    frames (``tokens_per_second``, finite) and Qwen3-Omni's audio token ids. Immutable,
    comparable and picklable."""

    def __new__(
        cls,
        family: str,
        spatial_merge_size: int,
        image_token_id: int,
        video_token_id: int,
        vision_start_token_id: int,
        tokens_per_second: float = 1.0,
        audio_token_id: int | None = None,
        audio_start_token_id: int | None = None,
    ) -> RopeSpec: ...
    @property
    def family(self) -> str: ...
    @property
    def spatial_merge_size(self) -> int: ...
    @property
    def image_token_id(self) -> int: ...
    @property
    def video_token_id(self) -> int: ...
    @property
    def vision_start_token_id(self) -> int: ...
    @property
    def tokens_per_second(self) -> float: ...
    @property
    def audio_token_id(self) -> int | None: ...
    @property
    def audio_start_token_id(self) -> int | None: ...

def rope_positions(
    values: _I64,
    offsets: _I64,
    spec: RopeSpec,
    image_grids: _I64 | None = None,
    video_grids: _I64 | None = None,
    video_seconds: list[float] = ...,
    use_audio_in_video: bool = False,
) -> npt.NDArray[np.int64] | npt.NDArray[np.float32]:
    """``(3, total)`` rotary positions of each row, as the family's ``get_rope_index``."""

def padded_rope_positions(
    input_ids: _I64,
    attention_mask: _I64,
    spec: RopeSpec,
    image_grids: _I64 | None = None,
    video_grids: _I64 | None = None,
    video_seconds: list[float] = ...,
    use_audio_in_video: bool = False,
    text_row: bool = True,
) -> npt.NDArray[np.int64] | npt.NDArray[np.float32]:
    """Rotary positions of a padded ``(B, L)`` batch, ``(4, B, L)`` with the text positions
    first or ``(3, B, L)`` without ``text_row``; padding is 0."""

def pixel_rows(
    targets: _I64,
    patch_size: int,
    merge_size: int,
    temporal_patch_size: int,
    frames: _I64 | None = None,
) -> _I64:
    """Rows of ``pixel_values`` per image resized to ``targets`` (``(N, 2)`` height, width);
    with ``frames`` (frames per video), ``ceil(frames / temporal) · (H/patch) · (W/patch)``."""

def write_pixel_values(
    images: list[npt.NDArray[np.uint8]],
    targets: _I64,
    out: npt.NDArray[np.float32] | npt.NDArray[np.uint16],
    table: npt.NDArray[np.float32] | npt.NDArray[np.uint16],
    patch_size: int,
    merge_size: int,
    temporal_patch_size: int,
    threads: int = 1,
) -> None:
    """Writes the ``pixel_values`` rows of ``(H, W, 3)`` uint8 ``images``, each resized to its
    target by antialiased bicubic, into ``out`` through the 3 x 256 ``table``."""

def write_video_pixel_values(
    videos: list[npt.NDArray[np.uint8]],
    targets: _I64,
    out: npt.NDArray[np.float32] | npt.NDArray[np.uint16],
    table: npt.NDArray[np.float32] | npt.NDArray[np.uint16],
    patch_size: int,
    merge_size: int,
    temporal_patch_size: int,
    threads: int = 1,
) -> None:
    """Writes the ``pixel_values_videos`` rows of ``(T, H, W, 3)`` uint8 ``videos``, every
    frame resized to its video's target, frames taken ``temporal_patch_size`` at a time (the
    last repeated to fill the last group), into ``out`` through the 3 x 256 ``table``."""

def write_planes(
    images: list[npt.NDArray[np.uint8]],
    targets: _I64,
    out: npt.NDArray[np.float32] | npt.NDArray[np.uint16],
    table: npt.NDArray[np.float32] | npt.NDArray[np.uint16],
    interpolation: str,
    threads: int = 1,
) -> None:
    """Writes the channels-first values of ``(H, W, 3)`` uint8 ``images`` (not cut into
    patches), each resized to its target by antialiased ``interpolation`` (``"bilinear"`` or
    ``"bicubic"``, torch's uint8 arithmetic), one after another into the 2-D ``out`` through
    the 3 x 256 ``table``."""

def write_tiles(
    images: list[npt.NDArray[np.uint8]],
    resizes: _I64,
    tiles: _I64,
    out: npt.NDArray[np.float32] | npt.NDArray[np.uint16],
    table: npt.NDArray[np.float32] | npt.NDArray[np.uint16],
    fills: npt.NDArray[np.float32] | npt.NDArray[np.uint16],
    interpolation: str,
    threads: int = 1,
) -> None:
    """Writes tiles of resized ``(H, W, 3)`` uint8 ``images`` into the ``(slots, 3, height,
    width)`` ``out``. ``resizes`` ``(R, 4)``: ``(image, source, height, width)``, ``source``
    -1 for the image itself or an earlier resize of the same image; or ``(R, 8)``, those and
    a crop ``(top, left, height, width)`` of the source resized instead of all of it (read in
    place), four -1s for none. ``tiles`` ``(K, 5)``:
    ``(resize, top, left, slot, fill)``, the window of that resize at (top, left), values
    outside it from ``fills`` (3 values each, out's dtype). ``table``: 3 x 256 values of
    out's dtype. Slots no tile names are left as they are."""
