"""The fast path against the processor call it replaces, per Qwen family: ids, masks,
token types, grids and labels exactly, pixel values bit for bit; settings it does not
reproduce fall back to the processor (logged once); bad engine arguments are errors."""

from __future__ import annotations

import logging
from multiprocessing.reduction import ForkingPickler

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from transformers import Qwen2VLImageProcessor

from helpers import assert_same_batch
from vlm_collate import engine, qwen2_5_collate_fn
from vlm_collate.pipeline.fast_path import fast_encoding, fast_plan, pixel_values
from vlm_collate.testing.builders import qwen2_5_vl_processor
from vlm_collate.testing.families import qwen2_vl_processor, qwen3_vl_processor

BUILDERS = {
    "qwen2_vl": qwen2_vl_processor,
    "qwen2_5_vl": qwen2_5_vl_processor,
    "qwen3_vl": qwen3_vl_processor,
}
PIXEL_TOLERANCE = 0.0
"""Largest difference allowed between fast-path and processor pixel values (measured: 0)."""


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def processor(request):
    return BUILDERS[request.param]()


def _image(rng: np.random.Generator, height: int, width: int, smooth: bool) -> Image.Image:
    if smooth:  # gradients and edges, where resampling differences would show
        y, x = np.mgrid[0:height, 0:width]
        array = np.stack(
            [x * 255 // max(width - 1, 1), y * 255 // max(height - 1, 1), (x ^ y) % 256], -1
        )
        return Image.fromarray(array.astype(np.uint8))
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def _examples(seed: int) -> list[dict]:
    """Conversations with 0-3 images of mixed sizes (up- and downscaled), 1-2 turns."""
    rng = np.random.default_rng(seed)
    examples = []
    for i in range(5):
        images = [
            _image(rng, int(rng.integers(20, 700)), int(rng.integers(20, 700)), bool(k % 2))
            for k in range(i % 4)
        ]
        content = [{"type": "image", "image": im} for im in images]
        content.append({"type": "text", "text": f"What is in picture set {i}?"})
        messages = [
            {"role": "user", "content": content},
            {"role": "assistant", "content": f"Answer {i}: " + "blue " * (i + 1)},
        ]
        if i % 2:
            messages += [
                {"role": "user", "content": "And then?"},
                {"role": "assistant", "content": "Nothing more."},
            ]
        examples.append({"messages": messages})
    return examples


def _assert_same(fast: dict, slow: dict) -> None:
    assert_same_batch(fast, slow, PIXEL_TOLERANCE)


@pytest.mark.parametrize("seed", [0, 1])
def test_collate_equals_the_processor_path(processor, seed, monkeypatch):
    examples = _examples(seed)
    assert fast_plan(processor) is not None
    calls = []
    original = type(processor).__call__
    monkeypatch.setattr(
        type(processor),
        "__call__",
        lambda self, *a, **k: calls.append(1) or original(self, *a, **k),
    )
    fast = qwen2_5_collate_fn(examples, processor)
    assert not calls  # the fast path made the batch
    slow = qwen2_5_collate_fn(examples, processor, fast_path=False)
    assert calls
    _assert_same(dict(fast), dict(slow))
    assert "pixel_values" in fast and "mm_token_type_ids" in fast
    assert (fast["labels"] != -100).any()


def test_encoding_equals_the_processor_call(processor):
    rng = np.random.default_rng(7)
    sizes = [(1, 1), (13, 900), (900, 13), (27, 29), (56, 56), (300, 451), (640, 480), (1100, 700)]
    images = [[_image(rng, h, w, k % 2 == 0)] for k, (h, w) in enumerate(sizes)]
    images.append([])  # a text-only sample in a batch with images
    pad = "<|vision_start|><|image_pad|><|vision_end|>"
    texts = [pad * len(s) + f"sample {i} " * (i + 1) for i, s in enumerate(images)]
    flat = [im for s in images for im in s]
    slow = processor(
        text=texts, images=flat, padding=True, padding_side="right", return_tensors="pt"
    )
    fast = fast_encoding(processor, texts, images)
    assert fast is not None
    _assert_same(fast, dict(slow))


def test_half_precision_pixels_equal_the_cast_processor_output():
    processor = qwen3_vl_processor()
    rng = np.random.default_rng(3)
    images = [_image(rng, 123, 321, True), _image(rng, 400, 90, False)]
    plan = fast_plan(processor)
    expected = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
    for dtype in (torch.bfloat16, torch.float16):
        got, grids = pixel_values(images, plan, dtype)
        assert got.dtype == dtype
        assert torch.equal(got, expected.to(dtype))


class _SharingCollate:
    """The fast-path collate, also reporting from inside the worker whether its
    ``pixel_values`` was in shared memory and stayed in place when pickled for the
    main process (a tensor not yet shared is copied into new shared memory there)."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, examples):
        batch = dict(qwen2_5_collate_fn(examples, self.processor))
        pixels = batch["pixel_values"]
        shared, address = pixels.is_shared(), pixels.data_ptr()
        ForkingPickler.dumps(pixels)  # what the worker's result queue does to it
        batch["was_shared"] = torch.tensor(shared)
        batch["not_copied"] = torch.tensor(pixels.data_ptr() == address)
        return batch


def test_pixels_are_made_in_shared_memory_in_a_dataloader_worker():
    processor = qwen2_5_vl_processor()
    examples = _examples(1)
    loader = DataLoader(
        examples,
        batch_size=len(examples),
        num_workers=1,
        collate_fn=_SharingCollate(processor),
        multiprocessing_context="fork",
    )
    (batch,) = list(loader)
    assert batch.pop("was_shared").item() and batch.pop("not_copied").item()
    _assert_same(batch, dict(qwen2_5_collate_fn(examples, processor, fast_path=False)))
    # Outside a worker the output is ordinary memory.
    assert not qwen2_5_collate_fn(examples, processor)["pixel_values"].is_shared()


def test_custom_mean_and_std_are_reproduced():
    processor = qwen2_5_vl_processor()
    processor.image_processor.image_mean = [0.1, 0.2, 0.3]
    processor.image_processor.image_std = [0.9, 0.5, 0.25]
    processor.image_processor.rescale_factor = 1 / 200
    examples = _examples(4)
    assert fast_plan(processor) is not None
    _assert_same(
        dict(qwen2_5_collate_fn(examples, processor)),
        dict(qwen2_5_collate_fn(examples, processor, fast_path=False)),
    )


class _CroppingImageProcessor(Qwen2VLImageProcessor):
    """An image processor with its own resize rule (a subclass the fast path does not know)."""

    def resize(self, images, size, resample, factor, **kwargs):
        height, width = images.shape[-2:]
        return images[
            ..., : height // factor * factor or factor, : width // factor * factor or factor
        ]


def _no_resize(processor):
    processor.image_processor.do_resize = False


def _subclassed(processor):
    processor.image_processor = _CroppingImageProcessor(min_pixels=56 * 56, max_pixels=448 * 448)


def _bilinear(processor):
    processor.image_processor.resample = 2


@pytest.mark.parametrize("change", [_no_resize, _subclassed, _bilinear], ids=lambda f: f.__name__)
def test_settings_it_does_not_reproduce_fall_back_logged_once(change, caplog):
    processor = qwen2_5_vl_processor()
    change(processor)
    rng = np.random.default_rng(5)
    side = 56 if change is _no_resize else 200  # do_resize=False needs patch-aligned images
    examples = [
        {
            "messages": [
                {
                    "role": "user",
                    "content": [{"type": "image", "image": _image(rng, side, side, True)}],
                },
                {"role": "assistant", "content": "A picture."},
            ]
        }
    ]
    with caplog.at_level(logging.INFO, logger="vlm_collate"):
        first = qwen2_5_collate_fn(examples, processor)
        qwen2_5_collate_fn(examples, processor)
    reasons = [r.getMessage() for r in caplog.records if "fast path off" in r.getMessage()]
    assert len(reasons) == 1, reasons
    assert fast_plan(processor) is None
    _assert_same(dict(first), dict(qwen2_5_collate_fn(examples, processor, fast_path=False)))


def test_a_processor_subclass_falls_back():
    base = qwen2_5_vl_processor()
    subclass = type("MyQwenProcessor", (type(base),), {})
    processor = subclass(
        image_processor=base.image_processor,
        tokenizer=base.tokenizer,
        video_processor=base.video_processor,
        chat_template=base.chat_template,
    )
    assert fast_plan(processor) is None
    assert fast_encoding(processor, ["hi"], [[]]) is None


def test_bad_engine_arguments_are_errors_naming_them():
    targets = np.array([[28, 28]], dtype=np.int64)
    out = np.empty((4, 1176), np.float32)
    table = np.zeros(768, np.float32)
    image = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(ValueError, match=r"images\[0\] must be a \(height, width, 3\) uint8"):
        engine.write_pixel_values([image.astype(np.float32)], targets, out, table, 14, 2, 2)
    with pytest.raises(ValueError, match=r"images\[0\] has shape"):
        engine.write_pixel_values([np.zeros((10, 10, 5), np.uint8)], targets, out, table, 14, 2, 2)
    with pytest.raises(ValueError, match="out must be a float32 array"):
        engine.write_pixel_values([image], targets, out.astype(np.float64), table, 14, 2, 2)
    with pytest.raises(ValueError, match="table must be a 1-D array"):
        engine.write_pixel_values([image], targets, out, table.astype(np.float64), 14, 2, 2)
    with pytest.raises(ValueError, match="out holds 1176 values"):
        engine.write_pixel_values([image], targets, out[:1], table, 14, 2, 2)
    with pytest.raises(ValueError, match=r"targets\[0\] = \(28, 30\)"):
        engine.pixel_rows(np.array([[28, 30]], dtype=np.int64), 14, 2, 2)
    with pytest.raises(ValueError, match="patch_size must be >= 0"):
        engine.pixel_rows(targets, -14, 2, 2)
    with pytest.raises(ValueError, match="limit"):
        engine.pixel_rows(np.array([[28 * 2**30, 28 * 2**30]], dtype=np.int64), 14, 2, 2)
