"""Property tests: the Rust engine agrees with the plain-Python reference."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vlm_collate import _engine, reference
from vlm_collate.engine import ragged

# A small alphabet makes matches (and near-matches) frequent.
token = st.integers(min_value=0, max_value=5)
tokens = st.lists(token, max_size=40)
short = st.lists(token, min_size=1, max_size=4)


def i64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.int64)


@st.composite
def padded_batches(draw, max_rows: int = 5):
    """(ids, mask) of right- or left-padded rows, including empty rows."""
    rows = draw(st.lists(tokens, min_size=0, max_size=max_rows))
    side = draw(st.sampled_from(["right", "left"]))
    ids, mask = reference.pad_rows(rows, 0, side)
    width = max((len(r) for r in rows), default=0)
    return np.asarray(ids, dtype=np.int64).reshape(len(rows), width), np.asarray(
        mask, dtype=np.int64
    ).reshape(len(rows), width)


@given(tokens, st.lists(token, max_size=6), st.integers(0, 45), st.booleans())
def test_find_subsequence(haystack, pattern, start, flag):
    assert _engine.find_subsequence(i64(haystack), i64(pattern), start, flag) == (
        reference.find_subsequence(haystack, pattern, start, flag)
    )


@given(
    padded_batches(),
    st.lists(short, min_size=1, max_size=3),
    st.lists(short, min_size=1, max_size=2),
    st.lists(token, max_size=2),
)
def test_labels_from_markers(batch, starts, ends, ignore):
    ids, mask = batch
    labels, found = _engine.labels_from_markers(ids, mask, starts, ends, ignore)
    want_labels, want_found = reference.labels_from_markers(ids, mask, starts, ends, ignore)
    assert labels.tolist() == want_labels
    assert found.tolist() == want_found
    # Padding is never a target.
    assert (labels[mask == 0] == -100).all()
    # Counting headers changes nothing else, and counts what the reference counts.
    counted = _engine.labels_from_markers(ids, mask, starts, ends, ignore, count_headers=True)
    want = reference.labels_from_markers(ids, mask, starts, ends, ignore, count_headers=True)
    assert [a.tolist() for a in counted] == [want_labels, want_found, want[2]]
    # Every position where a start marker begins, counted by brute force.
    brute = [
        sum(
            1
            for p in range(ids.shape[1])
            if mask[r, p] and any(ids[r, p : p + len(s)].tolist() == s for s in starts)
        )
        for r in range(ids.shape[0])
    ]
    assert counted[2].tolist() == brute


@st.composite
def content_queries(draw):
    ids, mask = draw(padded_batches())
    per_row = [draw(st.integers(0, 3)) for _ in range(ids.shape[0])]
    replies = [draw(st.lists(token, max_size=4)) for _ in range(sum(per_row))]
    stops = draw(st.lists(token, max_size=2))
    headers = draw(st.lists(short, max_size=2))
    ignore = draw(st.lists(token, max_size=1))
    return ids, mask, replies, per_row, stops, headers, ignore


@given(content_queries())
def test_labels_from_contents(query):
    ids, mask, replies, per_row, stops, headers, ignore = query
    values, offsets = ragged(replies)
    got = _engine.labels_from_contents(
        ids, mask, values, offsets, i64(per_row), stops, headers, ignore
    )
    want = reference.labels_from_contents(
        ids, mask, values, offsets, per_row, stops, headers, ignore
    )
    assert got[0].tolist() == want[0]
    assert got[1].tolist() == want[1]


@given(
    st.lists(tokens, max_size=5),
    st.sampled_from(["right", "left"]),
    st.one_of(st.none(), st.integers(0, 50)),
    st.one_of(st.none(), st.integers(1, 8)),
)
def test_pad_rows(rows, side, max_length, multiple):
    values, offsets = ragged(rows)
    try:
        want = reference.pad_rows(rows, 7, side, max_length, multiple)
    except ValueError:
        with pytest.raises(ValueError, match="more than max_length"):
            _engine.pad_rows(values, offsets, 7, side, max_length, multiple)
        return
    ids, mask = _engine.pad_rows(values, offsets, 7, side, max_length, multiple)
    assert ids.tolist() == want[0]
    assert mask.tolist() == want[1]
    assert _engine.unpad(ids, mask)[0].tolist() == [t for r in rows for t in r]


@st.composite
def expansions(draw):
    ids, mask = draw(padded_batches())
    placeholder = 3
    per_row = [int(((r == placeholder) & (m != 0)).sum()) for r, m in zip(ids, mask)]
    counts = [draw(st.integers(0, 5)) for _ in range(sum(per_row))]
    return ids, mask, placeholder, counts, per_row


@given(expansions(), st.sampled_from(["right", "left"]))
def test_expand_placeholders(case, side):
    ids, mask, placeholder, counts, per_row = case
    got_ids, got_mask = _engine.expand_placeholders(
        ids, mask, placeholder, i64(counts), i64(per_row), 0, side
    )
    want_ids, want_mask = reference.expand_placeholders(
        ids, mask, placeholder, counts, per_row, 0, side
    )
    assert got_ids.tolist() == want_ids
    assert got_mask.tolist() == want_mask
    assert int((got_ids[got_mask != 0] == placeholder).sum()) == sum(counts)


@given(expansions())
def test_expand_rejects_a_wrong_count(case):
    ids, mask, placeholder, counts, per_row = case
    if not per_row:
        return
    bad = list(per_row)
    bad[-1] += 1
    with pytest.raises(ValueError, match=f"sample {len(bad) - 1} has"):
        _engine.expand_placeholders(ids, mask, placeholder, i64(counts + [1]), i64(bad), 0)


@given(st.lists(st.tuples(st.integers(1, 3), st.integers(1, 8), st.integers(1, 8)), max_size=6))
def test_tokens_per_grid(grids):
    arr = i64(grids).reshape(-1, 3)
    try:
        want = reference.tokens_per_grid(grids)
    except ValueError:
        with pytest.raises(ValueError, match="not divisible"):
            _engine.tokens_per_grid(arr)
        return
    assert _engine.tokens_per_grid(arr).tolist() == want


@given(st.lists(tokens, max_size=5), st.integers(0, 30), st.lists(token, max_size=2))
def test_fitted_lengths(rows, max_length, media):
    values, offsets = ragged(rows)
    got = _engine.fitted_lengths(values, offsets, max_length, media)
    assert got.tolist() == reference.fitted_lengths(rows, max_length, media)


@settings(max_examples=30)
@given(st.sampled_from(["float", "int32", "2d", "strided"]))
def test_bad_arrays_are_value_errors(kind):
    good = i64([1, 2, 3])
    bad = {
        "float": np.array([1.0, 2.0]),
        "int32": np.array([1, 2], dtype=np.int32),
        "2d": i64([[1, 2]]),
        "strided": i64([1, 2, 3, 4])[::2],
    }[kind]
    with pytest.raises(ValueError, match="haystack"):
        _engine.find_subsequence(bad, good)


def test_engine_argument_errors_name_the_problem():
    with pytest.raises(ValueError, match="start must be >= 0"):
        _engine.find_subsequence(i64([1]), i64([1]), -1)
    with pytest.raises(ValueError, match="padding_side"):
        _engine.pad_rows(i64([1]), i64([0, 1]), 0, "middle")
    with pytest.raises(ValueError, match="last offset"):
        _engine.pad_rows(i64([1]), i64([0, 2]), 0)
    with pytest.raises(ValueError, match="shape"):
        _engine.tokens_per_grid(i64([[1, 2]]))
    with pytest.raises(ValueError, match="assistant-start marker"):
        _engine.labels_from_markers(i64([[1]]), i64([[1]]), [], [[1]])
    with pytest.raises(ValueError, match="negative"):
        _engine.expand_placeholders(i64([[1]]), i64([[1]]), 9, i64([]), i64([-1]), 0)
    with pytest.raises(ValueError, match="replies_per_row"):
        _engine.labels_from_contents(i64([[1]]), i64([[1]]), i64([]), i64([0]), i64([1]), [])
    empty = np.zeros((0, 0), dtype=np.int64)
    labels, found = _engine.labels_from_markers(empty, empty, [[1]], [[2]])
    assert labels.shape == (0, 0) and found.shape == (0,)


def test_engine_calls_from_threads_agree_with_the_reference():
    rng = np.random.default_rng(0)
    ids = rng.integers(0, 4, size=(8, 4000)).astype(np.int64)
    mask = np.ones_like(ids)
    starts, ends = [[1, 2]], [[3]]
    want = reference.labels_from_markers(ids, mask, starts, ends)[0]
    results: list = [None] * 4

    def work(k: int) -> None:
        results[k] = _engine.labels_from_markers(ids, mask, starts, ends)[0].tolist()

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r == want for r in results)
