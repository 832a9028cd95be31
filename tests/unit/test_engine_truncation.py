"""The engine's truncation primitives: ``fitted_lengths`` keeps a media block whole
(its closing delimiter included) or drops the row, and ``fit_rows`` cuts or pads each
row to a width on either side."""

from __future__ import annotations

import numpy as np
import pytest

from vlm_collate import _engine


def i64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.int64)


def ragged(rows) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum([len(r) for r in rows], out=offsets[1:])
    values = np.asarray([t for r in rows for t in r], dtype=np.int64)
    return values, offsets


# ----------------------------------------------------------------- media blocks in truncation


OPEN, PAD, CLOSE = 151652, 151655, 151653  # <|vision_start|> <|image_pad|> <|vision_end|>


def test_fitted_lengths_keeps_the_closing_delimiter():
    row = [1, OPEN, PAD, PAD, CLOSE, 2, 3]
    values, offsets = ragged([row, [4, 5, 6, 7, 8]])
    # Just past the last <|image_pad|>: with delimiters the block would lose its close.
    assert _engine.fitted_lengths(values, offsets, 4, [PAD], [OPEN], [CLOSE]).tolist() == [-1, 4]
    # The old call (placeholders only) is unchanged.
    assert _engine.fitted_lengths(values, offsets, 4, [PAD]).tolist() == [4, 4]
    assert _engine.fitted_lengths(values, offsets, 5, [PAD], [OPEN], [CLOSE]).tolist() == [5, 5]
    # A cut before the block would drop it whole: also -1.
    assert _engine.fitted_lengths(values, offsets, 1, [PAD], [OPEN], [CLOSE]).tolist() == [-1, 1]
    kw = _engine.fitted_lengths(
        values, offsets, 6, media_ids=[PAD], block_open_ids=[OPEN], block_close_ids=[CLOSE]
    )
    assert kw.tolist() == [6, 5]


def test_fitted_lengths_row_tokens_inside_a_block():
    sep = 77
    values, offsets = ragged([[OPEN, PAD, sep, PAD, CLOSE, sep, 5]])
    assert _engine.fitted_lengths(values, offsets, 3, [PAD], [OPEN], [CLOSE]).tolist() == [-1]
    assert _engine.fitted_lengths(values, offsets, 6, [PAD], [OPEN], [CLOSE]).tolist() == [6]
    # Without delimiters, row tokens count as media ids: the run is the block.
    values, offsets = ragged([[1, PAD, sep, PAD, 2, 3]])
    assert _engine.fitted_lengths(values, offsets, 3, [PAD, sep]).tolist() == [-1]
    assert _engine.fitted_lengths(values, offsets, 4, [PAD, sep]).tolist() == [4]


# ----------------------------------------------------------------- fit_rows


def fit_rows_reference(array, row_lengths, length, fill, side):
    out = []
    for row, n in zip(array, row_lengths):
        kept = list(row[: min(n, length)])
        padding = [fill] * (length - len(kept))
        out.append(kept + padding if side == "right" else padding + kept)
    return out


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("length", [0, 1, 2, 4, 6])
def test_fit_rows_both_sides(side, length):
    array = [[1, 2, 3, 0], [4, 5, 0, 0], [0, 0, 0, 0]]
    row_lengths = [3, 2, 0]
    got = _engine.fit_rows(i64(array), i64(row_lengths), length, -100, side)
    assert got.dtype == np.int64 and got.shape == (3, length)
    assert got.tolist() == fit_rows_reference(array, row_lengths, length, -100, side)


def test_fit_rows_examples():
    array = i64([[1, 2, 3, 0], [4, 5, 0, 0]])
    assert _engine.fit_rows(array, i64([3, 2]), 5, 9).tolist() == [
        [1, 2, 3, 9, 9],
        [4, 5, 9, 9, 9],
    ]
    assert _engine.fit_rows(array, i64([3, 2]), 5, 9, "left").tolist() == [
        [9, 9, 1, 2, 3],
        [9, 9, 9, 4, 5],
    ]
    assert _engine.fit_rows(array, i64([3, 2]), 2, 9, "left").tolist() == [[1, 2], [4, 5]]
