"""add_lengths: the length column of a datasets.Dataset equals LengthEstimator on each
row, images read from JPEG files' headers (never decoded), cached by fingerprint, and
PackedBatchSampler takes it."""

from __future__ import annotations

import pytest

from helpers import make_image, trl_rows
from vlm_collate import LengthEstimator, PackedBatchSampler
from vlm_collate.packing.lengths import add_lengths

datasets = pytest.importorskip("datasets")


def test_add_lengths_matches_the_estimator_and_is_cached(qwen_processor, tmp_path):
    rows = trl_rows(12)
    for i, row in enumerate(rows):
        if row["images"]:
            path = tmp_path / f"{i}.jpg"
            make_image(64 + 8 * i, 48, i).save(path)
            row["images"] = [str(path)]
    data = datasets.Dataset.from_list(rows).cast_column("images", datasets.List(datasets.Image()))
    data = data.flatten_indices()
    out = add_lengths(data, qwen_processor, num_proc=2)
    estimate = LengthEstimator(qwen_processor)
    expected = [
        estimate({**r, "images": [str(tmp_path / f"{i}.jpg")] if rows[i]["images"] else []}, i)
        for i, r in enumerate(rows)
    ]
    assert out["length"] == expected
    assert out.features["images"] == data.features["images"]  # decoded again for training
    again = add_lengths(data, qwen_processor, num_proc=2)
    assert again._fingerprint == out._fingerprint
    assert again.cache_files == out.cache_files or not out.cache_files
    sampler = PackedBatchSampler(out["length"], 512, seed=0)
    assert sorted(i for b in sampler for i in b) == list(range(12))
