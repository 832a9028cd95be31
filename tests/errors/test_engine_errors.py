"""Engine refusals are ``vlm_collate.errors.EngineError`` (a ``CollateError``, so a
``ValueError``) naming the argument: wrong dtypes and shapes, bad offsets, sizes past the
engine's limit, and ids, positions or sizes that are floats, bools or beyond int64 (never
an ``OverflowError`` or ``TypeError`` from the binding, never silently truncated)."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from vlm_collate import _engine, engine, find_pattern_indices
from vlm_collate.errors import CollateError, EngineError


def i64(x) -> np.ndarray:
    return np.asarray(x, dtype=np.int64)


IDS = i64([[1, 2, 3], [4, 5, 6]])
MASK = np.ones_like(IDS)


def spec(**overrides) -> _engine.RopeSpec:
    args = dict(
        family="qwen2_vl",
        spatial_merge_size=2,
        image_token_id=151655,
        video_token_id=151656,
        vision_start_token_id=151652,
    )
    args.update(overrides)
    return _engine.RopeSpec(**args)


REFUSALS = {
    "float array": (
        lambda: _engine.find_subsequence(np.arange(3.0), i64([1])),
        "haystack",
    ),
    "mismatched shapes": (
        lambda: _engine.labels_from_markers(IDS, np.ones((3, 2), np.int64), [[1]], [[2]]),
        "attention_mask",
    ),
    "bad offsets": (lambda: _engine.pad_rows(i64([1, 2, 3]), i64([0, 2]), 0), "offsets"),
    "decreasing offsets": (
        lambda: _engine.pad_rows(i64([1, 2, 3]), i64([0, 2, 1, 3]), 0),
        "offsets",
    ),
    "huge size": (lambda: _engine.fit_rows(IDS, i64([3, 3]), 2**40, 0), "length"),
    "huge max_length": (
        lambda: _engine.pad_rows(i64([1]), i64([0, 1]), 0, "right", 2**40),
        "max_length",
    ),
    "bad padding side": (
        lambda: _engine.pad_rows(i64([1]), i64([0, 1]), 0, "middle"),
        "padding_side",
    ),
    "padding side not a string": (
        lambda: _engine.pad_rows(i64([1]), i64([0, 1]), 0, 3),
        "padding_side",
    ),
    "float pad id": (lambda: _engine.pad_rows(i64([1]), i64([0, 1]), 2.0), "pad_value"),
    "huge pad id": (lambda: _engine.pad_rows(i64([1]), i64([0, 1]), 2**63), "pad_value"),
    "float in an id list": (
        lambda: _engine.labels_from_markers(IDS, MASK, [[1]], [[2]], [1.5]),
        "ignore_ids[0]",
    ),
    "string as a list of lists": (
        lambda: _engine.labels_from_markers(IDS, MASK, [[1]], "ab"),
        "ends",
    ),
    "bool as a size": (lambda: _engine.fit_rows(IDS, i64([3, 3]), True, 0), "length"),
    "float merge kernel": (
        lambda: _engine.tokens_per_grid(i64([[1, 4, 4]]), (2, 2.0)),
        "merge_kernel_size",
    ),
    "grids not (N, 3)": (lambda: _engine.tokens_per_grid(i64([[1, 2]])), "grids"),
    "int as a flag": (
        lambda: _engine.packed_layout(i64([0, 2]), i64([0]), i64([0, 1]), 4, 1),
        "shift",
    ),
    "negative capacity": (lambda: _engine.pack_bins(i64([1]), -1), "capacity"),
    "bad strategy": (lambda: _engine.pack_bins(i64([1]), 4, "worst_fit"), "strategy"),
    "spec not a RopeSpec": (
        lambda: _engine.rope_positions(i64([1]), i64([0, 1]), "qwen2_vl"),
        "spec",
    ),
    "float seconds entry": (
        lambda: _engine.rope_positions(i64([1]), i64([0, 1]), spec(), None, None, ["x"]),
        "video_seconds[0]",
    ),
    "float patch size": (
        lambda: _engine.pixel_rows(i64([[28, 28]]), 14.0, 2, 2),
        "patch_size",
    ),
    "images not a list": (
        lambda: _engine.write_pixel_values(
            "abc",
            i64([[28, 28]]),
            np.zeros((4, 1176), np.float32),
            np.zeros(768, np.float32),
            14,
            2,
            2,
        ),
        "images",
    ),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_every_engine_refusal_is_an_engine_error_naming_the_argument(case):
    call, name = REFUSALS[case]
    with pytest.raises(EngineError, match=name.replace("[", r"\[").replace("]", r"\]")) as info:
        call()
    assert isinstance(info.value, CollateError)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(
    ("start", "shown"),
    [(2**70, str(2**70)), (1.5, "1.5"), (True, "True"), (np.float64(2.0), "2.0")],
)
def test_find_subsequence_refuses_a_start_that_is_not_an_int64(start, shown):
    with pytest.raises(EngineError, match="start must be an integer within int64") as info:
        _engine.find_subsequence(i64([1, 2, 3]), i64([2]), start=start)
    assert shown in str(info.value)


def test_find_subsequence_takes_numpy_integers_as_start():
    assert _engine.find_subsequence(i64([1, 2, 3, 2]), i64([2]), start=np.int64(2)) == (3, 4)
    with pytest.raises(EngineError, match="start must be >= 0"):
        _engine.find_subsequence(i64([1, 2, 3]), i64([2]), start=-1)


@pytest.mark.parametrize("start", [2**70, 1.5, True, -1])
def test_find_pattern_indices_refuses_a_start_that_is_not_an_int64(start):
    with pytest.raises(CollateError, match="start"):
        find_pattern_indices([1, 2, 3], [2], start)


def test_find_pattern_indices_keeps_integer_starts():
    assert find_pattern_indices([1, 2, 3, 2], [2], 2) == (3, 4)
    assert find_pattern_indices([1, 2, 3, 2], [2], np.int64(0)) == (1, 2)


def test_as_int64_refuses_float_ids_with_an_engine_error():
    with pytest.raises(EngineError, match="input_ids must be integers"):
        engine.as_int64([[1.5, 2.0]], "input_ids")


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ({"family": "qwen9_vl"}, "family"),
        ({"family": 3}, "family"),
        ({"spatial_merge_size": -2}, "spatial_merge_size"),
        ({"spatial_merge_size": 0}, "spatial_merge_size"),
        ({"spatial_merge_size": 2.0}, "spatial_merge_size"),
        ({"image_token_id": 2**64}, "image_token_id"),
        ({"vision_start_token_id": True}, "vision_start_token_id"),
        ({"tokens_per_second": float("nan")}, "tokens_per_second"),
        ({"audio_token_id": 1.5}, "audio_token_id"),
    ],
)
def test_rope_spec_refuses_bad_values(overrides, name):
    with pytest.raises(EngineError, match=name):
        spec(**overrides)


def test_rope_spec_holds_its_values_and_pickles():
    s = spec(family="qwen3_omni", tokens_per_second=25, audio_token_id=7, audio_start_token_id=8)
    assert (s.family, s.spatial_merge_size, s.tokens_per_second) == ("qwen3_omni", 2, 25.0)
    assert (s.audio_token_id, s.audio_start_token_id) == (7, 8)
    assert pickle.loads(pickle.dumps(s)) == s
    assert s != spec()
    assert "qwen3_omni" in repr(s)
    assert engine.RopeSpec is _engine.RopeSpec


def test_rope_positions_through_a_spec():
    # Text, then a 1x4x4 image (merged 2x2: 4 tokens), then text.
    image, start = 151655, 151652
    row = [10, start, image, image, image, image, 11, 12]
    got = _engine.rope_positions(i64(row), i64([0, len(row)]), spec(), i64([[1, 4, 4]]))
    assert got.tolist() == [
        [0, 1, 2, 2, 2, 2, 4, 5],
        [0, 1, 2, 2, 3, 3, 4, 5],
        [0, 1, 2, 3, 2, 3, 4, 5],
    ]
    padded = _engine.padded_rope_positions(
        i64([row + [0]]), i64([[1] * len(row) + [0]]), spec(), i64([[1, 4, 4]])
    )
    assert padded.shape == (4, 1, len(row) + 1)
    assert padded[1:, 0, : len(row)].tolist() == got.tolist()
    assert padded[:, 0, -1].tolist() == [0, 0, 0, 0]
