"""The vision column: LengthEstimator.vision / measure_batch and add_lengths'
``vision_length`` count the tokens a row's images and videos become, equal to the
image and video placeholder tokens the processor writes in the collated batch; and
PackedBatchSampler(balance="vision") reads the column from the dataset."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import assistant, make_image, png_bytes, user
from vlm_collate import LengthEstimator, PackedBatchSampler, VLMCollator
from vlm_collate.errors import OptionError
from vlm_collate.packing.lengths import add_lengths
from vlm_collate.testing import qwen2_5_vl_processor

datasets = pytest.importorskip("datasets")


@pytest.fixture(scope="module")
def processor():
    built = qwen2_5_vl_processor()
    built.video_processor.cap_pixels_per_frame = False  # its default, set: no warning
    return built


def _rows() -> list[dict]:
    clip = np.random.default_rng(0).integers(0, 256, (4, 40, 56, 3), dtype=np.uint8)
    picture = {"type": "image", "image": make_image(90, 60, 1)}
    return [
        {"messages": [user("Hello?"), assistant("Hi.")]},
        {"messages": [user(picture, "What is it?"), assistant("A picture.")]},
        {
            "messages": [
                user({"type": "image", "image": png_bytes(make_image(200, 120, 2))}, "And?"),
                assistant("Two."),
                user({"type": "image", "image": make_image(33, 300, 3)}, "This one?"),
                assistant("Long."),
            ]
        },
        {"messages": [user({"type": "video", "video": clip}, "Moving?"), assistant("Yes.")]},
        {  # a row's own budget shrinks its image
            "messages": [
                user({"type": "image", "image": make_image(400, 300, 4)}, "Small?"),
                assistant("Yes."),
            ],
            "max_pixels": 28 * 28 * 12,
        },
    ]


def _placeholders(processor, rows) -> tuple[list[int], list[int]]:
    """(vision tokens, lengths) per row in the batch the processor builds: its image and
    video placeholder tokens, and its attention mask's sum."""
    batch = VLMCollator(processor)(rows)
    ids = batch["input_ids"]
    tokens = processor.tokenizer.convert_tokens_to_ids(["<|image_pad|>", "<|video_pad|>"])
    vision = sum((ids == t).sum(dim=1) for t in tokens).tolist()
    return vision, batch["attention_mask"].sum(dim=1).tolist()


def test_vision_tokens_equal_the_processors_placeholders(processor):
    rows = _rows()
    expected_vision, expected_lengths = _placeholders(processor, rows)
    assert expected_vision[0] == 0 and len(set(expected_vision)) >= 4  # a shift is seen
    estimate = LengthEstimator(processor)
    indices = list(range(len(rows)))
    lengths, vision = estimate.measure_batch(rows, indices)
    assert vision == expected_vision
    assert [estimate.vision(r, i) for i, r in enumerate(rows)] == expected_vision
    assert lengths == expected_lengths == estimate.batch(rows, indices)


def test_vision_tokens_after_shrinking(processor):
    """With shrink_media the vision tokens are those of the shrunk images, as the
    collator builds them."""
    rows = _rows()[1:3]
    options = {"shrink_media": True, "max_length": 60}
    batch = VLMCollator(processor, **options)(rows)
    pad = processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    expected = (batch["input_ids"] == pad).sum(dim=1).tolist()
    _, vision = LengthEstimator(processor, options=options).measure_batch(rows, [0, 1])
    assert vision == expected
    assert vision != LengthEstimator(processor).measure_batch(rows, [0, 1])[1]  # it shrank


def _dataset(tmp_path, n: int = 9):
    rows = []
    for i in range(n):
        images = []
        if i % 3 != 2:
            path = tmp_path / f"{i}.jpg"
            make_image(40 + 30 * i, 60 + 10 * (i % 4), i).save(path, quality=90)
            images.append(str(path))
        question = [{"type": "image"} for _ in images] + [{"type": "text", "text": f"Q{i}?"}]
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": [{"type": "text", "text": f"A {i}."}]},
                ],
                "images": images,
            }
        )
    data = datasets.Dataset.from_list(rows)
    return rows, data.cast_column("images", datasets.List(datasets.Image()))


def test_add_lengths_adds_the_vision_column(processor, tmp_path):
    rows, data = _dataset(tmp_path)
    out = add_lengths(data, processor)
    estimate = LengthEstimator(processor)
    assert list(out["vision_length"]) == [estimate.vision(r, i) for i, r in enumerate(rows)]
    assert list(out["length"]) == [estimate(r, i) for i, r in enumerate(rows)]
    assert out.features["images"] == data.features["images"]  # decoded again for training
    assert len(set(out["vision_length"])) > 3
    without = add_lengths(data, processor, vision_column=None)
    assert "vision_length" not in without.column_names
    assert list(without["length"]) == list(out["length"])


def test_sampler_reads_the_columns_of_the_dataset(processor, tmp_path):
    _, data = _dataset(tmp_path, 30)
    out = add_lengths(data, processor)
    for balance in ("vision", "tokens"):
        from_dataset = PackedBatchSampler(out, 400, seed=1, num_replicas=2, rank=1, balance=balance)
        by_hand = PackedBatchSampler(
            list(out["length"]),
            400,
            seed=1,
            num_replicas=2,
            rank=1,
            balance=balance,
            vision=list(out["vision_length"]),
        )
        assert list(from_dataset) == list(by_hand)
    shuffled = out.shuffle(seed=3)  # an indices mapping: the columns follow it
    sampler = PackedBatchSampler(shuffled, 400, balance="vision")
    assert sampler.lengths.tolist() == list(shuffled["length"])
    assert sampler.vision.tolist() == list(shuffled["vision_length"])
    with pytest.raises(OptionError, match="vision_length"):
        PackedBatchSampler(out.remove_columns("vision_length"), 400, balance="vision")
    with pytest.raises(OptionError, match="no 'length' column"):
        PackedBatchSampler(data, 400)
