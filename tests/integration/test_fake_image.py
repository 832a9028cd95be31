"""``text_only_batches="fake_image"``: a batch without media gets one tiny image with no
labels that no real token attends to, so the vision tower runs (FSDP/ZeRO-3 need every
rank to run it every step) while the loss and the gradients of the real tokens stay
what they were. Checked on the tiny Qwen2.5-VL model, packed and padded."""

from __future__ import annotations

import pytest
import torch

from helpers import IGNORE, image_item, one_turn
from vlm_collate import PackedCollator, VLMCollator
from vlm_collate.errors import OptionError
from vlm_collate.packing.fake_image import add_fake_image, fake_image
from vlm_collate.testing.tiny_models import tiny_qwen_vl_model

pytestmark = pytest.mark.slow

TEXT_ROWS = [
    one_turn("hello there " * 5, reply="Hi, how can I help?"),
    one_turn("what is two plus two", reply="Four."),
    one_turn("name a colour", reply="Blue."),
]


@pytest.fixture(scope="module")
def model():
    return tiny_qwen_vl_model(hidden_size=16, num_hidden_layers=2)


def loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    model.train()
    out = model(**batch)
    out.loss.backward()
    grads = {n: None if p.grad is None else p.grad.clone() for n, p in model.named_parameters()}
    return out.loss.detach(), grads


def is_vision(name: str) -> bool:
    return ".visual." in f".{name}"


def assert_same_training_signal(model, plain, fake):
    assert "pixel_values" not in plain and fake["pixel_values"].shape[0] > 0
    loss, grads = loss_and_grads(model, plain)
    fake_loss, fake_grads = loss_and_grads(model, fake)
    torch.testing.assert_close(fake_loss, loss, rtol=1e-5, atol=1e-6)
    vision = [n for n in grads if is_vision(n)]
    assert vision
    # Without the fake image the tower never ran; with it, every tower parameter has a
    # gradient (zero: nothing depends on it, but the tower ran and its gradients exist,
    # so FSDP/ZeRO-3 reduce them on every rank).
    assert all(grads[n] is None for n in vision)
    assert all(fake_grads[n] is not None for n in vision)
    for name, grad in grads.items():
        if is_vision(name) or grad is None:
            continue
        torch.testing.assert_close(fake_grads[name], grad, rtol=1e-4, atol=1e-7, msg=name)


def test_fake_image_block_is_the_processors_own(qwen_processor):
    fake = fake_image(VLMCollator(qwen_processor, shift=False))
    tokenizer = qwen_processor.tokenizer
    pad = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    tokens = fake.tokens.tolist()
    assert tokens[0] == tokenizer.convert_tokens_to_ids("<|vision_start|>")
    assert tokens[-1] == tokenizer.convert_tokens_to_ids("<|vision_end|>")
    # The processor's own resize: tokens = patches / merge**2, patches from the grid.
    t, h, w = fake.image_grid_thw[0].tolist()
    assert tokens[1:-1] == [pad] * (t * h * w // 4)
    assert fake.pixel_values.shape[0] == t * h * w


@pytest.mark.parametrize("shift", [False, True])
@pytest.mark.parametrize("fixed", [False, True])  # a new row / room in a row's padding
def test_packed_text_only_batch_trains_the_same(qwen_processor, model, shift, fixed):
    options = {"shift": shift, "pad_to_max_length": fixed}
    plain = PackedCollator(qwen_processor, 128, **options)(TEXT_ROWS)
    fake = PackedCollator(qwen_processor, 128, text_only_batches="fake_image", **options)(TEXT_ROWS)
    rows, width = plain["input_ids"].shape
    if fixed:  # 128 columns: the fake document goes in the padding of a row
        assert fake["input_ids"].shape == (rows, width) == (1, 128)
    else:  # rows as wide as their content: a row of its own
        assert fake["input_ids"].shape == (rows + 1, width)
    # Its own document: positions from 0, its own segment, every label ignored.
    image_id = qwen_processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    row, cols = torch.nonzero(fake["input_ids"] == image_id, as_tuple=True)
    start = int(cols.min()) - 1  # <|vision_start|>
    assert int(fake["position_ids"][0, int(row[0]), start]) == 0
    assert start + int(row[0]) * fake["input_ids"].shape[1] in fake["cu_seq_lens_q"].tolist()
    assert (fake["labels"][fake["input_ids"] == image_id] == IGNORE).all()
    assert int((fake["labels"] != IGNORE).sum()) == int((plain["labels"] != IGNORE).sum())
    assert_same_training_signal(model, plain, fake)


@pytest.mark.parametrize("padding_side", ["right", "left"])
def test_padded_text_only_batch_trains_the_same(qwen_processor, model, padding_side):
    collate = VLMCollator(qwen_processor, padding_side=padding_side)
    plain = collate(TEXT_ROWS)
    fake = add_fake_image(plain, collate)
    assert fake is not plain and "pixel_values" not in plain
    image_id = qwen_processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    at = fake["input_ids"] == image_id
    assert at.any() and (fake["attention_mask"][at] == 0).all()
    assert torch.equal(fake["attention_mask"].sum(), plain["attention_mask"].sum())
    assert_same_training_signal(model, plain, fake)


def test_batches_with_media_and_the_default_are_left_alone(qwen_processor):
    with_image = [one_turn("what is it?", images=[image_item()["image"]]), *TEXT_ROWS]
    packed = PackedCollator(qwen_processor, 256, text_only_batches="fake_image")
    plain = PackedCollator(qwen_processor, 256)
    batch, reference = packed(with_image), plain(with_image)
    assert torch.equal(batch["input_ids"], reference["input_ids"])
    assert torch.equal(batch["pixel_values"], reference["pixel_values"])
    assert "pixel_values" not in PackedCollator(qwen_processor, 256, text_only_batches="keep")(
        TEXT_ROWS
    )
    with pytest.raises(OptionError, match="text_only_batches"):
        PackedCollator(qwen_processor, 256, text_only_batches="image")


def test_streamed_batches_carry_the_fake_image(qwen_processor):
    from vlm_collate.packing import PackedIterableDataset

    stream = PackedIterableDataset(
        TEXT_ROWS, qwen_processor, 256, buffer_size=2, text_only_batches="fake_image"
    )
    batches = list(stream)
    assert batches and all(b["pixel_values"].shape[0] > 0 for b in batches)
    assert sum(int((b["labels"] != IGNORE).sum()) for b in batches) == sum(
        int((b["labels"] != IGNORE).sum())
        for b in PackedIterableDataset(TEXT_ROWS, qwen_processor, 256, buffer_size=2)
    )
