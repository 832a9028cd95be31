"""``shrink_media=True``: a sample longer than ``max_length`` first has its images'
``max_pixels`` lowered (on the processor's grid) until it fits, and only then follows
``on_overflow``. The result equals the same sample collated with that budget directly,
and its labels equal the template's own character-offset truth."""

from __future__ import annotations

import pytest
import torch

from helpers import make_image, one_turn
from vlm_collate import LengthEstimator, VLMCollator
from vlm_collate.errors import SampleTooLongError
from vlm_collate.testing import offset_targets

pytestmark = pytest.mark.filterwarnings("ignore:Passing `min_pixels`:FutureWarning")


def big_row(seed: int = 0, size=(900, 700)) -> dict:
    image = make_image(*size, seed=seed)
    return one_turn({"type": "image", "image": image}, "Describe it.", reply="A test image.")


def small_row() -> dict:
    return one_turn({"type": "image", "image": make_image(60, 50, seed=3)}, "And this?", reply="ok")


def collapsed(ids: list[int], image_id: int) -> list[int]:
    """Ids with each run of image tokens collapsed to one placeholder (the text form)."""
    out: list[int] = []
    for t in ids:
        if t == image_id and out and out[-1] == image_id:
            continue
        out.append(t)
    return out


@pytest.mark.parametrize("fast", [True, False])
def test_a_large_image_is_shrunk_to_fit_and_labels_stay_exact(qwen_processor, fast):
    row = big_row()
    full = VLMCollator(qwen_processor, fast_path=fast)([row])
    length = int(full["attention_mask"].sum())
    limit = length - 150
    with pytest.raises(SampleTooLongError):
        VLMCollator(qwen_processor, max_length=limit, fast_path=fast)([row])
    batch = VLMCollator(qwen_processor, max_length=limit, shrink_media=True, fast_path=fast)([row])
    assert int(batch["attention_mask"].sum()) <= limit
    assert batch.report.truncated == [] and batch.report.dropped == []
    ((index, cap),) = batch.report.shrunk
    assert index == 0
    assert (batch["image_grid_thw"] < full["image_grid_thw"]).any()
    # Equal to the sample collated with that budget directly, on the processor path.
    direct = VLMCollator(qwen_processor, max_pixels=cap, fast_path=False)([row])
    for key in ("input_ids", "attention_mask", "labels", "pixel_values", "image_grid_thw"):
        assert torch.equal(batch[key], direct[key]), key
    # The labels are the template's own reply tokens (character offsets).
    image_id = qwen_processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    ids, targets = offset_targets(qwen_processor, row["conversation"])
    got = batch["input_ids"][0].tolist()
    labels = batch["labels"][0].tolist()
    kept = [i for i, t in enumerate(got) if t != image_id or i == 0 or got[i - 1] != image_id]
    assert collapsed(got, image_id) == [got[i] for i in kept]
    truth = [t if keep else -100 for t, keep in zip(ids, targets)]
    assert [labels[i] for i in kept][: len(truth)] == truth
    # The estimate agrees without processing pixels.
    options = VLMCollator(qwen_processor, max_length=limit, shrink_media=True).options
    assert LengthEstimator(qwen_processor, options=options)(row) == int(
        batch["attention_mask"].sum()
    )


def test_only_the_over_long_sample_is_shrunk_in_a_mixed_batch(qwen_processor):
    rows = [small_row(), big_row(seed=1), small_row()]
    full = VLMCollator(qwen_processor)(rows)
    limit = int(full["attention_mask"][1].sum()) - 100
    for fast in (True, False):
        batch = VLMCollator(qwen_processor, max_length=limit, shrink_media=True, fast_path=fast)(
            rows
        )
        assert [i for i, _ in batch.report.shrunk] == [1]
        cap = batch.report.shrunk[0][1]
        assert torch.equal(batch["image_grid_thw"][[0, 2]], full["image_grid_thw"][[0, 2]])
        alone = VLMCollator(qwen_processor, max_pixels=cap, fast_path=False)([rows[1]])
        assert torch.equal(batch["image_grid_thw"][1], alone["image_grid_thw"][0])
        assert torch.equal(
            batch["input_ids"][1, : alone["input_ids"].shape[1]], alone["input_ids"][0]
        )
        assert torch.equal(batch["labels"][1, : alone["labels"].shape[1]], alone["labels"][0])
        rows_of = torch.cat(
            [torch.zeros(1, dtype=torch.long), full["image_grid_thw"].prod(1).cumsum(0)]
        )
        # the other samples' pixels are unchanged
        first = int(full["image_grid_thw"][0].prod())
        assert torch.equal(batch["pixel_values"][:first], full["pixel_values"][:first])
        assert torch.equal(batch["pixel_values"][-first:], full["pixel_values"][int(rows_of[2]) :])


def test_still_too_long_at_min_pixels_follows_on_overflow(qwen_processor):
    row = big_row()
    text_only = VLMCollator(qwen_processor, max_pixels=3136)([row])
    limit = int(text_only["attention_mask"].sum()) - 3  # cannot fit even at the smallest grid
    with pytest.raises(SampleTooLongError):
        VLMCollator(qwen_processor, max_length=limit, shrink_media=True)([row])
    batch = VLMCollator(
        qwen_processor, max_length=limit, shrink_media=True, on_overflow="truncate"
    )([row])
    assert batch.report.truncated == [0] and batch.report.shrunk[0][0] == 0
    assert batch["input_ids"].shape[1] <= limit


def test_shrink_media_is_a_boolean():
    from vlm_collate import CollateOptions
    from vlm_collate.errors import OptionError

    with pytest.raises(OptionError, match="shrink_media"):
        CollateOptions(shrink_media="yes")


@pytest.mark.parametrize("fast", [True, False])
def test_a_packed_batch_shrinks_like_the_padded_path(qwen_processor, fast):
    from vlm_collate import PackedCollator

    rows = [small_row(), big_row(seed=1), small_row()]
    full = VLMCollator(qwen_processor)(rows)
    limit = int(full["attention_mask"][1].sum()) - 100
    padded = VLMCollator(qwen_processor, max_length=limit, shrink_media=True, fast_path=fast)(rows)
    inner = VLMCollator(qwen_processor, shrink_media=True, fast_path=fast)
    options = VLMCollator(qwen_processor, max_length=limit, shrink_media=True).options
    packed = PackedCollator(
        inner,
        max_length=limit,
        shift=False,
        length_estimator=LengthEstimator(qwen_processor, options=options),
    )(rows)
    assert packed.report.shrunk == padded.report.shrunk and [
        i for i, _ in packed.report.shrunk
    ] == [1]
    assert packed.report.length_mismatches == [] and packed.report.dropped == []
    documents = packed.report.documents
    assert sorted(d[0] for d in documents) == [0, 1, 2]
    # media tensors in document order: the padded path's grids, reordered
    order = [index for index, _, _, _ in documents]
    assert torch.equal(packed["image_grid_thw"], padded["image_grid_thw"][order])
    assert not torch.equal(packed["image_grid_thw"], full["image_grid_thw"][order])  # it shrank
    for index, row, start, n in documents:
        assert n == int(padded["attention_mask"][index].sum())
        for key in ("input_ids", "labels"):
            assert torch.equal(packed[key][row, start : start + n], padded[key][index, :n]), key
