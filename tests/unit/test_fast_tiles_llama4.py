"""The Llama 4 tiled fast path against the processor call it replaces: ``input_ids``,
``attention_mask`` and labels exactly and ``pixel_values`` bit for bit (bfloat16, as the
processor normalises), for images from 1×1 to extreme aspect ratios, up- and
downscaled, one tile (no global view) or a grid plus the global view, several per
sample, at the offline builder's sizes (56² tiles, up to 4) and the published ones (336²,
up to 16). Settings it does not reproduce call the processor (logged once)."""

from __future__ import annotations

import dataclasses
import functools
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import assert_same_batch, assistant, processor_calls, user
from vlm_collate import VLMCollator
from vlm_collate.families.llama4 import llama4_collate_fn
from vlm_collate.pipeline.fast_tiles import tiled_encoding
from vlm_collate.processor.tiles import tile_plan
from vlm_collate.testing.families import llama4_processor

BOS = "<|begin_of_text|>"
IMAGE = "<|image|>"

SIZES = [
    (1, 1),
    (1, 900),
    (700, 2),
    (30, 40),
    (56, 56),
    (57, 55),
    (112, 56),
    (300, 120),
    (37, 500),
    (700, 1100),
    (100, 100),
]
"""(height, width): tiny, extreme aspect, below, at and above one tile (56), a 2 × 1
grid exactly, and over the 4-tile canvas (downscaled)."""


@functools.cache
def _processor():
    return llama4_processor()


def _image(h: int, w: int, seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    if seed % 2:  # gradients and sharp edges
        y, x = np.mgrid[0:h, 0:w]
        array = np.stack([x % 256, (y * 3) % 256, ((x ^ y) * 7) % 256], -1).astype(np.uint8)
    else:
        array = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return Image.fromarray(array)


def _processor_call(processor, texts, images) -> dict:
    kwargs = {"images": images} if any(images) else {}
    out = processor(
        text=texts,
        padding=True,
        padding_side="right",
        add_special_tokens=False,
        return_tensors="pt",
        **kwargs,
    )
    return dict(out)


def _fast(processor, texts, images, **kwargs) -> dict:
    out = tiled_encoding(processor, texts, images, add_special_tokens=False, **kwargs)
    assert out is not None
    return out


# --------------------------------------------------------------------------- the encoding


@pytest.mark.parametrize("size", SIZES)
def test_one_image_equals_the_processor_call(size):
    processor = _processor()
    texts = [f"{BOS}Look: {IMAGE} what is it?"]
    images = [[_image(*size, seed=sum(size))]]
    fast = _fast(processor, texts, images)
    assert fast["pixel_values"].dtype == torch.bfloat16
    assert_same_batch(fast, _processor_call(processor, texts, images))


@pytest.mark.parametrize("seed", range(3))
def test_batches_of_several_images_equal_the_processor_call(seed):
    """Several images per sample, adjacent ones too, a sample without images anywhere."""
    processor = _processor()
    rng = np.random.default_rng(seed)

    def image(k: int) -> Image.Image:
        h, w = SIZES[int(rng.integers(len(SIZES)))]
        return _image(h, w, seed * 10 + k)

    texts = [
        "no images here, a longer text " * 3,
        f"{BOS}two {IMAGE} apart {IMAGE} images",
        f"{IMAGE}{IMAGE}adjacent at the start {IMAGE} and one more",
        f"{BOS}{IMAGE}",
        "text only at the end",
    ]
    images = [[], [image(0), image(1)], [image(2), image(3), image(4)], [image(5)], []]
    assert_same_batch(_fast(processor, texts, images), _processor_call(processor, texts, images))


def test_text_only_batch_has_the_text_keys_only():
    processor = _processor()
    texts = ["no image", f"{BOS}a longer text here"]
    slow = _processor_call(processor, texts, [[], []])
    assert list(slow) == ["input_ids", "attention_mask"]
    assert_same_batch(_fast(processor, texts, [[], []]), slow)


def test_the_image_text_equals_the_processors_own_block():
    """Each image's text (runs written once and repeated, or written in full) is the
    processor's ``_prompt_split_image`` for the grid it chose."""
    processor = _processor()
    plan = tile_plan(processor)
    assert plan is not None and plan.patch_id is not None
    full = dataclasses.replace(plan, patch_id=None)
    patch = "<|patch|>"
    for h, w in SIZES:
        tiles = plan.image_tiles(h, w)
        rows, cols = tiles.info
        want = processor._prompt_split_image((rows, cols), plan.per_tile)
        assert full.image_tiles(h, w).text == want
        runs = tiles.text.split(patch)
        assert len(runs) == len(tiles.repeats) + 1
        assert (
            "".join(r + patch * n for r, n in zip(runs, (*tiles.repeats, 0), strict=True)) == want
        )
        assert len(tiles.windows) == rows * cols + (rows * cols > 1)


def test_other_precisions_when_asked_equal_the_cast_processor_output():
    processor = _processor()
    texts = [f"{BOS}{IMAGE} x", f"{BOS}{IMAGE} y"]
    images = [[_image(300, 120, 1)], [_image(50, 700, 2)]]
    slow = _processor_call(processor, texts, images)
    for dtype in (torch.float32, torch.float16):
        fast = _fast(processor, texts, images, pixel_dtype=dtype)
        assert torch.equal(fast["pixel_values"], slow["pixel_values"].to(dtype))


@pytest.mark.parametrize(
    "change",
    [
        {"max_patches": 1},
        {"max_patches": 9},
        {"resize_to_max_canvas": True},
        {"image_mean": [0.1, 0.5, 0.9], "image_std": [0.2, 0.3, 0.4]},
        {"do_normalize": False},  # rescale only: float32, as the processor returns
    ],
    ids=str,
)
def test_other_settings_are_reproduced(change):
    processor = llama4_processor(tile_size=28)
    for name, value in change.items():
        setattr(processor.image_processor, name, value)
    texts = [f"{BOS}{IMAGE} a", f"{BOS}{IMAGE}{IMAGE} b"]
    images = [[_image(90, 400, 3)], [_image(400, 90, 4), _image(20, 15, 5)]]
    assert tile_plan(processor) is not None
    fast = _fast(processor, texts, images)
    slow = _processor_call(processor, texts, images)
    assert fast["pixel_values"].dtype == slow["pixel_values"].dtype
    assert_same_batch(fast, slow)


def test_published_sizes_one_image():
    """One 448² image at the published 336² tiles, up to 16: the benchmark's case."""
    processor = llama4_processor(tile_size=336, max_patches=16)
    texts = [f"{BOS}{IMAGE} describe"]
    images = [[_image(448, 448, 7)]]
    fast = _fast(processor, texts, images)
    assert fast["pixel_values"].shape == (5, 3, 336, 336)  # 2 × 2 grid and the global view
    assert_same_batch(fast, _processor_call(processor, texts, images))


@pytest.mark.slow
@pytest.mark.parametrize("size", [(300, 1500), (1600, 1200), (1, 1), (336, 336), (2000, 90)])
def test_published_sizes_equal_the_processor_call(size):
    processor = llama4_processor(tile_size=336, max_patches=16)
    texts = [f"{BOS}{IMAGE} describe"]
    images = [[_image(*size, seed=size[0])]]
    assert_same_batch(_fast(processor, texts, images), _processor_call(processor, texts, images))


# --------------------------------------------------------------------------- the collate


def _examples(seed: int, pattern: str) -> list[dict]:
    """One example per letter of ``pattern``: ``i`` one image, ``m`` two, ``t`` none."""
    rng = np.random.default_rng(seed)
    examples = []
    for k, kind in enumerate(pattern):
        content = []
        for j in range({"i": 1, "m": 2, "t": 0}[kind]):
            h, w = SIZES[int(rng.integers(len(SIZES)))]
            content.append({"type": "image", "image": _image(h, w, seed + 3 * k + j)})
        content.append(f"Question {k}: what is shown?")
        messages = [user(*content), assistant(f"Answer {k}: " + "shapes " * (k + 1))]
        if k % 2:
            messages += [user("And then?"), assistant("Nothing more.")]
        examples.append({"messages": messages})
    return examples


@pytest.mark.parametrize("pattern", ["i", "tim", "mit", "tt"])
def test_collate_equals_the_processor_path(pattern, monkeypatch):
    processor = _processor()
    examples = _examples(len(pattern), pattern)
    calls = processor_calls(monkeypatch, processor)
    fast = dict(llama4_collate_fn(examples, processor, shift=False))
    assert not calls  # the fast path made the batch
    slow = dict(llama4_collate_fn(examples, processor, shift=False, fast_path=False))
    assert calls
    assert_same_batch(fast, slow)
    assert (fast["labels"] != -100).any()


def test_vlm_collator_equals_the_processor_path_with_truncation():
    processor = _processor()
    examples = _examples(5, "tii")
    options = {"max_length": 160, "on_overflow": "truncate"}
    fast = dict(VLMCollator(processor, **options)(examples))
    slow = dict(VLMCollator(processor, fast_path=False, **options)(examples))
    assert_same_batch(fast, slow)


# --------------------------------------------------------------------------- fallbacks


def _logged(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "fast path off" in r.getMessage()]


def _subclassed_processor():
    from transformers import Llama4Processor

    class Custom(Llama4Processor):
        pass

    base = llama4_processor()
    return Custom(
        image_processor=base.image_processor,
        tokenizer=base.tokenizer,
        patch_size=14,
        pixel_shuffle_ratio=0.5,
    )


def _changed(**change):
    def build():
        processor = llama4_processor()
        ip = processor.image_processor
        for attribute, value in change.items():
            # None: the method itself, set on the instance (a replacement the plan refuses).
            setattr(ip, attribute, getattr(ip, attribute) if value is None else value)
        return processor

    return build


def _processor_kwargs(**kwargs):
    def build():
        processor = llama4_processor()
        processor.images_kwargs = kwargs  # image kwargs the processor call passes
        return processor

    return build


@pytest.mark.parametrize(
    "build, reason",
    [
        (_subclassed_processor, "is not transformers' Llama4Processor"),
        (_changed(resample=3), "only bilinear is reproduced"),
        (_changed(rescale_and_normalize=None), "rescale_and_normalize is replaced"),
        (_changed(do_rescale=False, do_normalize=False), "uint8 pixel values"),
        (_processor_kwargs(max_patches=2), "the processor passes max_patches=2"),
    ],
)
def test_settings_it_does_not_reproduce_fall_back_logged_once(build, reason, caplog, monkeypatch):
    processor = build()
    texts = [f"{BOS}{IMAGE} x"]
    images = [[_image(300, 120, 1)]]
    with caplog.at_level(logging.INFO, logger="vlm_collate"):
        assert tiled_encoding(processor, texts, images) is None
        assert tiled_encoding(processor, texts, images) is None
    logged = _logged(caplog)
    assert len(logged) == 1 and reason in logged[0], logged
    calls = processor_calls(monkeypatch, processor)
    batch = llama4_collate_fn(_examples(1, "ii"), processor, shift=False)
    assert calls and "pixel_values" in batch


def test_texts_the_engine_runs_would_change_call_the_processor():
    """A ``<|patch|>`` in the text itself, or a marked control token (which the
    processor leaves unexpanded), is left to the processor call."""
    processor = _processor()
    image = [[_image(9, 9, 0)]]
    assert tiled_encoding(processor, [f"{BOS}<|patch|>{IMAGE}"], image) is None
    assert tiled_encoding(processor, [f"{BOS}\U000f0000{IMAGE}"], image) is None
    assert tiled_encoding(processor, [f"{BOS}{IMAGE}{IMAGE}"], image) is None
