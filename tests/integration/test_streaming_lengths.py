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


def test_batched_estimate_equals_the_row_by_row_estimator(qwen_processor, tmp_path):
    """RowLengths' batched path (all texts of a batch tokenized in one call) gives each
    row the length LengthEstimator gives it alone: appended stop token, budgets and
    shrinking included."""
    rows = trl_rows(9)
    rows[4]["messages"] = rows[4]["messages"][:1]  # ends on the user: no stop token
    rows[0]["max_pixels"] = 28 * 28 * 16  # a row's own budget
    path = tmp_path / "big.jpg"
    make_image(640, 480, 1).save(path)
    rows[1]["images"] = [str(path)]
    indices = list(range(len(rows)))
    for options in ({}, {"close_last_reply": "never"}, {"shrink_media": True, "max_length": 60}):
        estimate = LengthEstimator(qwen_processor, options=options)
        alone = [estimate(r, i) for r, i in zip(rows, indices)]
        assert estimate.batch(rows, indices) == alone
    assert len(set(alone)) > 2  # the rows differ, so a shifted result would be caught


def test_text_token_counts_equal_one_call_per_text(qwen_processor):
    from vlm_collate.packing.sampler import text_token_counts
    from vlm_collate.testing.families import gemma3_tokenizer

    texts = ["<|im_start|>user\nHello there<|im_end|>\n", "", "a b c " * 50, "é ü 漢字"]
    for tokenizer in (qwen_processor.tokenizer, gemma3_tokenizer()):  # gemma adds a BOS
        expected = [len(tokenizer(t)["input_ids"]) for t in texts]
        assert text_token_counts(tokenizer, texts) == expected
        assert text_token_counts(tokenizer, []) == []


def test_jpeg_sizes_come_from_the_header_without_decoding(qwen_processor, tmp_path, monkeypatch):
    """A JPEG's size is read from its header: with decoding made impossible the estimate
    still counts the image's tokens as the image processor does on the decoded image."""
    from PIL import Image, ImageFile

    path = tmp_path / "photo.jpg"
    make_image(500, 380, 2).save(path, quality=90)
    with Image.open(path) as image:
        image.load()
        grid = qwen_processor.image_processor(images=[image.convert("RGB")])["image_grid_thw"]
    merge = qwen_processor.image_processor.merge_size
    expected_image = int(grid.prod()) // merge**2

    def refuse(self, *args, **kwargs):
        raise AssertionError("pixels decoded")

    row = {
        "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Hi"}]},
            {"role": "assistant", "content": [{"type": "text", "text": "A picture."}]},
        ],
        "images": [str(path)],
    }
    text_only = {**row, "images": [], "messages": [dict(m) for m in row["messages"]]}
    text_only["messages"][0] = {"role": "user", "content": [{"type": "text", "text": "Hi"}]}
    estimate = LengthEstimator(qwen_processor)
    base = estimate(text_only, 0)
    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)
    monkeypatch.setattr(Image.Image, "load", refuse)
    with_image = estimate.batch([row], [0])[0]
    # The template renders the image as start, one placeholder, end; the placeholder
    # becomes the image's tokens (from the grid of the decoded image).
    markers = qwen_processor.tokenizer("<|vision_start|><|image_pad|><|vision_end|>")
    assert with_image - base == len(markers["input_ids"]) - 1 + expected_image
