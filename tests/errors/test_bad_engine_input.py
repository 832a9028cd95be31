"""The engine through its Python binding on bad input: huge ids, huge sizes, overflowing
grids, mismatched shapes and dtypes, inconsistent offsets. Every case either returns the
right result or raises a ValueError whose message names the argument; none aborts the
interpreter (an abort would kill the whole test run, not fail one test)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlm_collate import _engine, expand_image_tokens

HUGE_ID = 2**62
I64_MAX = 2**63 - 1
I64_MIN = -(2**63)


def i64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.int64)


def ragged(rows) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([len(r) for r in rows], out=offsets[1:])
    values = np.asarray([t for r in rows for t in r], dtype=np.int64)
    return values, offsets


# ----------------------------------------------------------------- huge ids


@pytest.mark.parametrize("head", [100, HUGE_ID, I64_MAX])
@pytest.mark.parametrize("end", [103, HUGE_ID + 1, I64_MIN])
@pytest.mark.parametrize("media", [105, HUGE_ID + 2, -5])
def test_huge_marker_end_and_ignore_ids_are_plain_ids(head, end, media):
    a = 101
    row = [head, 7, end, head, a, 5, media, 6, end, 9]
    ids = i64([row])
    labels, found = _engine.labels_from_markers(
        ids, np.ones_like(ids), [[head, a]], [[end]], [media]
    )
    assert labels.tolist() == [[-100, -100, -100, -100, -100, 5, -100, 6, end, -100]]
    assert found.tolist() == [1]


def test_huge_ids_in_the_content_search():
    head, end, media = HUGE_ID, I64_MAX, I64_MIN
    row = [head, 1, 8, end, head, 2, 8, media, end]
    ids = i64([row])
    values, offsets = ragged([[8, media]])
    labels, located = _engine.labels_from_contents(
        ids, np.ones_like(ids), values, offsets, i64([1]), [end], [[head, 2]], [media]
    )
    assert labels.tolist() == [[-100] * 6 + [8, -100, end]]
    assert located.tolist() == [1]


def test_huge_media_and_delimiter_ids_in_truncation():
    values, offsets = ragged([[1, I64_MAX, HUGE_ID, I64_MIN, 2, 3]])
    got = _engine.fitted_lengths(values, offsets, 3, [HUGE_ID], [I64_MAX], [I64_MIN])
    assert got.tolist() == [-1]
    got = _engine.fitted_lengths(values, offsets, 5, [HUGE_ID], [I64_MAX], [I64_MIN])
    assert got.tolist() == [5]


def test_a_huge_placeholder_id_expands():
    ids = i64([[1, HUGE_ID, 2]])
    out, mask = _engine.expand_placeholders(ids, np.ones_like(ids), HUGE_ID, i64([3]), i64([1]), 0)
    assert out.tolist() == [[1, HUGE_ID, HUGE_ID, HUGE_ID, 2]]
    assert mask.tolist() == [[1] * 5]


# ----------------------------------------------------------------- huge sizes


@pytest.mark.parametrize("max_length", [2**28 + 1, 2**40, 2**62, I64_MAX])
def test_huge_max_length_is_refused_by_name(max_length):
    values, offsets = ragged([[1, 2, 3], [4]])
    with pytest.raises(ValueError, match=f"max_length={max_length}") as info:
        _engine.pad_rows(values, offsets, 0, "right", max_length)
    assert "limit" in str(info.value)


@pytest.mark.parametrize("multiple", [2**40, 2**62, I64_MAX])
def test_huge_pad_to_multiple_of_is_refused_by_name(multiple):
    values, offsets = ragged([[1, 2, 3], [4]])
    with pytest.raises(ValueError, match=f"pad_to_multiple_of={multiple}") as info:
        _engine.pad_rows(values, offsets, 0, "left", None, multiple)
    assert "internal error" not in str(info.value)


@pytest.mark.parametrize("count", [2**40, 2**62, I64_MAX])
def test_huge_expansion_count_is_refused_by_name(count):
    ids = i64([[1, 9, 2, 9]])
    with pytest.raises(ValueError, match=rf"counts\[1\] = {count}"):
        _engine.expand_placeholders(ids, np.ones_like(ids), 9, i64([4, count]), i64([2]), 0)


def test_counts_whose_sum_is_too_large_are_refused():
    ids = i64([[9, 9]])
    big = _engine.MAX_ELEMENTS // 2 + 1
    with pytest.raises(ValueError, match="counts: the expanded rows"):
        _engine.expand_placeholders(ids, np.ones_like(ids), 9, i64([big, big]), i64([2]), 0)


@pytest.mark.parametrize(
    "grid",
    [[1, 2**21, 2**21], [2**31, 2**32, 2**32], [I64_MAX, 2**62, 2**62], [2**62, 2, 2]],
)
def test_overflowing_grids_are_refused(grid):
    with pytest.raises(ValueError, match=r"image 1 .*grids\[1\]") as info:
        _engine.tokens_per_grid(i64([[1, 4, 4], grid]))
    assert "limit" in str(info.value)


def test_grid_counts_do_not_wrap():
    # Formerly 0 or negative: t*(h/2)*(w/2) wrapped around.
    with pytest.raises(ValueError, match="grids"):
        _engine.tokens_per_grid(i64([[2**31, 2**32, 2**32]]))
    assert _engine.tokens_per_grid(i64([[2, 4, 6]])).tolist() == [12]


def test_huge_fit_rows_length_is_refused_by_name():
    with pytest.raises(ValueError, match=f"length={2**40}"):
        _engine.fit_rows(i64([[1, 2]]), i64([2]), 2**40, 0)


# ----------------------------------------------------------------- shapes and dtypes


def test_a_transposed_mask_is_refused_naming_both_shapes():
    ids = i64([[1, 2, 3], [4, 5, 6]])
    mask = np.ascontiguousarray(np.ones((3, 2), dtype=np.int64))
    for call in (
        lambda: _engine.labels_from_markers(ids, mask, [[1]], [[3]]),
        lambda: _engine.unpad(ids, mask),
        lambda: _engine.expand_placeholders(ids, mask, 9, i64([]), i64([0, 0]), 0),
        lambda: _engine.labels_from_contents(ids, mask, i64([]), i64([0]), i64([0, 0]), [3]),
    ):
        with pytest.raises(ValueError) as info:
            call()
        message = str(info.value)
        assert "attention_mask has shape (3, 2)" in message
        assert "input_ids has shape (2, 3)" in message


@pytest.mark.parametrize(
    "offsets, match",
    [
        ([1, 2, 3], "reply_offsets must start at 0"),
        ([0, 3, 2], r"reply_offsets\[2\] = 2 follows reply_offsets\[1\] = 3"),
        ([0, 1, 2], r"length of reply_values \(3\)"),
        ([0, -1, 3], "must not decrease"),
    ],
)
def test_inconsistent_offsets_are_refused_by_name(offsets, match):
    ids = i64([[1, 2, 3], [4, 5, 6]])
    with pytest.raises(ValueError, match=match):
        _engine.labels_from_contents(
            ids, np.ones_like(ids), i64([1, 2, 3]), i64(offsets), i64([1, 1]), [3]
        )


def test_offsets_of_pad_rows_and_fitted_lengths_are_checked():
    with pytest.raises(
        ValueError,
        match=r"the last offset, offsets\[-1\] = 2, must equal the length of values \(3\)",
    ):
        _engine.pad_rows(i64([1, 2, 3]), i64([0, 2]), 0)
    with pytest.raises(ValueError, match="offsets must not decrease"):
        _engine.fitted_lengths(i64([1, 2, 3]), i64([0, 3, 1, 3]), 2, [])


def test_float_arrays_are_refused_with_a_clear_message():
    ids = np.ones((2, 3), dtype=np.float64)
    with pytest.raises(ValueError, match=r"input_ids must be a 2-D int64 numpy array.*float64"):
        _engine.labels_from_markers(ids, ids, [[1]], [[2]])
    with pytest.raises(ValueError, match=r"values must be a 1-D int64 numpy array.*np\.asarray"):
        _engine.pad_rows(np.zeros(3), i64([0, 3]), 0)
    with pytest.raises(ValueError, match=r"array must be a 2-D int64"):
        _engine.fit_rows(np.zeros((2, 2), dtype=np.int32), i64([1, 1]), 2, 0)


def test_empty_markers_and_headers_are_refused_by_name():
    ids = i64([[1, 2]])
    with pytest.raises(ValueError, match="starts is empty"):
        _engine.labels_from_markers(ids, np.ones_like(ids), [], [[2]])
    with pytest.raises(ValueError, match=r"ends\[1\] is empty"):
        _engine.labels_from_markers(ids, np.ones_like(ids), [[1]], [[2], []])
    with pytest.raises(ValueError, match=r"headers\[0\] is empty"):
        _engine.labels_from_contents(
            ids, np.ones_like(ids), i64([]), i64([0, 0]), i64([1]), [2], [[]]
        )


def test_non_contiguous_arrays_are_refused():
    ids = i64([[1, 2, 3], [4, 5, 6]])[:, ::2]
    with pytest.raises(ValueError, match="input_ids must be C-contiguous"):
        _engine.unpad(ids, np.ones((2, 2), dtype=np.int64))


def test_grid_mismatches_name_both_numbers():
    ids, mask = torch.tensor([[1, 9, 2]]), torch.ones(1, 3, dtype=torch.long)
    with pytest.raises(ValueError, match="1 image placeholders .* describes 2 images"):
        expand_image_tokens(ids, mask, [[1, 2, 2], [1, 2, 2]], 9)
    with pytest.raises(
        ValueError,
        match=r"image 0 has grid \(t=1, h=3, w=4\).*not divisible by the merge kernel \(2, 2\)",
    ):
        expand_image_tokens(ids, mask, [[1, 3, 4]], 9)


# ----------------------------------------------------------------- arguments of truncation

OPEN, PAD = 151652, 151655  # <|vision_start|> <|image_pad|>


def test_fitted_lengths_delimiters_come_in_pairs():
    values, offsets = ragged([[1, 2]])
    with pytest.raises(ValueError, match="block_open_ids and block_close_ids"):
        _engine.fitted_lengths(values, offsets, 1, [PAD], [OPEN], [])


@pytest.mark.parametrize(
    "row_lengths, length, side, match",
    [
        ([1], 2, "right", r"row_lengths has shape \(1,\) but array has shape \(2, 4\)"),
        ([1, 5], 2, "right", r"row_lengths\[1\] = 5 is outside 0..=4"),
        ([-1, 0], 2, "right", r"row_lengths\[0\] = -1"),
        ([1, 1], -1, "right", "length must be >= 0, got -1"),
        ([1, 1], 2, "middle", "padding_side must be 'left' or 'right'"),
    ],
)
def test_fit_rows_bad_arguments_are_named(row_lengths, length, side, match):
    with pytest.raises(ValueError, match=match):
        _engine.fit_rows(i64([[1, 2, 3, 0], [4, 5, 0, 0]]), i64(row_lengths), length, 0, side)
