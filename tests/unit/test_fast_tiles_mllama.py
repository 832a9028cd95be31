"""The Llama 3.2 Vision tiled fast path against the processor call it replaces: every
key (ids, masks, ``cross_attention_mask``, ``aspect_ratio_ids``/``aspect_ratio_mask``)
exactly and ``pixel_values`` bit for bit, for images from 1×1 to extreme aspect ratios,
up- and downscaled, several per sample, at the offline builder's tile (112) and the
published one (560). Where the processor's own output is inconsistent (samples without
images after the last one with images, or first), the fast path's batch is checked
against the processor's on the same rows in an order it handles. Settings it does not
reproduce call the processor (logged once)."""

from __future__ import annotations

import functools
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import assert_same_batch, assistant, processor_calls, user
from vlm_collate import VLMCollator
from vlm_collate.errors import CollateError
from vlm_collate.families.mllama import mllama_collate_fn
from vlm_collate.pipeline.fast_tiles import tiled_encoding
from vlm_collate.processor.tiles import tile_plan
from vlm_collate.testing.families import mllama_processor

BOS = "<|begin_of_text|>"
IMAGE = "<|image|>"

SIZES = [
    (1, 1),
    (1, 1000),
    (1000, 3),
    (48, 64),
    (112, 112),
    (113, 111),
    (224, 112),
    (300, 120),
    (37, 500),
    (700, 1100),
    (450, 450),
]
"""(height, width): tiny, extreme aspect, below, at and above one tile (112), and over
the 4-tile canvas (downscaled)."""


@functools.cache
def _processor():
    return mllama_processor()


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
    assert_same_batch(fast, _processor_call(processor, texts, images))


@pytest.mark.parametrize("seed", range(3))
def test_batches_of_several_images_equal_the_processor_call(seed):
    """Several images per sample (adjacent ones share the span after them), different
    counts per sample, a sample without images between others, texts with and without
    their BOS (the processor adds it, after leading images)."""
    processor = _processor()
    rng = np.random.default_rng(seed)

    def image(k: int) -> Image.Image:
        h, w = SIZES[int(rng.integers(len(SIZES)))]
        return _image(h, w, seed * 10 + k)

    texts = [
        f"{BOS}two {IMAGE} apart {IMAGE} images",
        "no images and no BOS either, a longer text " * 3,
        f"{IMAGE}{IMAGE}adjacent at the start, no BOS {IMAGE} and one more",
        f"{BOS}{IMAGE}",
    ]
    images = [[image(0), image(1)], [], [image(2), image(3), image(4)], [image(5)]]
    fast = _fast(processor, texts, images)
    slow = _processor_call(processor, texts, images)
    assert_same_batch(fast, slow)
    assert fast["cross_attention_mask"].shape[2] == 3
    assert fast["cross_attention_mask"][1].sum() == 0


def test_text_only_batch_has_the_text_keys_only():
    processor = _processor()
    texts = ["no BOS here", f"{BOS}a longer text here"]
    fast = _fast(processor, texts, [[], []])
    slow = _processor_call(processor, texts, [[], []])
    assert list(slow) == ["input_ids", "attention_mask"]
    assert_same_batch(fast, slow)


def test_half_precision_pixels_equal_the_cast_processor_output():
    processor = _processor()
    texts = [f"{BOS}{IMAGE} x", f"{BOS}{IMAGE} y"]
    images = [[_image(300, 120, 1)], [_image(50, 700, 2)]]
    slow = _processor_call(processor, texts, images)
    for dtype in (torch.bfloat16, torch.float16):
        fast = _fast(processor, texts, images, pixel_dtype=dtype)
        assert fast["pixel_values"].dtype == dtype
        assert torch.equal(fast["pixel_values"], slow["pixel_values"].to(dtype))


@pytest.mark.parametrize("tiles", [1, 2, 6])
def test_other_tile_counts_and_normalisation_are_reproduced(tiles):
    processor = mllama_processor(tile_size=56)
    ip = processor.image_processor
    ip.max_image_tiles = tiles
    ip.image_mean, ip.image_std, ip.rescale_factor = [0.1, 0.5, 0.9], [0.2, 0.3, 0.4], 1 / 200
    texts = [f"{BOS}{IMAGE} a", f"{BOS}{IMAGE}{IMAGE} b"]
    images = [[_image(90, 400, 3)], [_image(400, 90, 4), _image(57, 55, 5)]]
    assert tile_plan(processor) is not None
    assert_same_batch(_fast(processor, texts, images), _processor_call(processor, texts, images))


@pytest.mark.slow
@pytest.mark.parametrize("size", [(448, 448), (300, 1500), (1600, 1200), (1, 1)])
def test_published_tile_size_equals_the_processor_call(size):
    """560² tiles, up to 4 (Llama 3.2 Vision's preprocessor config)."""
    processor = mllama_processor(tile_size=560)
    texts = [f"{BOS}{IMAGE} describe"]
    images = [[_image(*size, seed=size[0])]]
    fast = _fast(processor, texts, images)
    assert fast["pixel_values"].shape[-2:] == (560, 560)
    assert_same_batch(fast, _processor_call(processor, texts, images))


def test_published_tile_size_one_image():
    """One 448² image at the published 560² tile: the benchmark's case, bit for bit."""
    processor = mllama_processor(tile_size=560)
    texts = [f"{BOS}{IMAGE} describe"]
    images = [[_image(448, 448, 7)]]
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


@pytest.mark.parametrize("pattern", ["i", "iti", "imm", "mit"])
def test_collate_equals_the_processor_path(pattern, monkeypatch):
    processor = _processor()
    examples = _examples(len(pattern), pattern)
    calls = processor_calls(monkeypatch, processor)
    fast = dict(mllama_collate_fn(examples, processor, shift=False))
    assert not calls  # the fast path made the batch
    slow = dict(mllama_collate_fn(examples, processor, shift=False, fast_path=False))
    assert calls
    if pattern.endswith("t"):  # compared in the next test (the processor drops rows)
        fast = {k: v for k, v in fast.items() if not k.startswith("aspect")}
        slow = {k: v for k, v in slow.items() if not k.startswith("aspect")}
    assert_same_batch(fast, slow)
    assert (fast["labels"] != -100).any()


def test_vlm_collator_equals_the_processor_path_with_truncation():
    processor = _processor()
    examples = _examples(5, "mim")
    options = {"max_length": 40, "on_overflow": "truncate"}
    fast = dict(VLMCollator(processor, **options)(examples))
    slow = dict(VLMCollator(processor, fast_path=False, **options)(examples))
    assert fast["cross_attention_mask"].shape[1] == 40
    assert_same_batch(fast, slow)


def _rows(batch: dict, order: list[int]) -> dict:
    return {k: v[order] for k, v in batch.items()}


def test_samples_without_images_after_the_last_image_keep_their_aspect_rows():
    """The processor drops ``aspect_ratio_ids``/``aspect_ratio_mask`` rows of samples
    without images after the last sample with images (its rows no longer match
    ``pixel_values``); the fast path keeps them, with the values the processor gives an
    absent image (id 0, mask ``[1, 0, 0, 0]``), and every other key equals the processor's."""
    processor = _processor()
    examples = _examples(11, "itt")
    fast = dict(mllama_collate_fn(examples, processor, shift=False))
    slow = dict(mllama_collate_fn(examples, processor, shift=False, fast_path=False))
    assert slow["aspect_ratio_ids"].shape[0] == 1  # the processor's inconsistent rows
    assert fast["aspect_ratio_ids"].shape == (3, 1)
    assert fast["aspect_ratio_mask"].shape == (3, 1, 4)
    assert torch.equal(fast["aspect_ratio_ids"][:1], slow["aspect_ratio_ids"])
    assert torch.equal(fast["aspect_ratio_mask"][:1], slow["aspect_ratio_mask"])
    assert fast["aspect_ratio_ids"][1:].eq(0).all()
    assert fast["aspect_ratio_mask"][1:].tolist() == [[[1, 0, 0, 0]]] * 2
    rest = [k for k in slow if not k.startswith("aspect")]
    assert_same_batch({k: fast[k] for k in rest}, {k: slow[k] for k in rest})


def test_a_first_sample_without_images_is_built_where_the_processor_fails():
    """The processor fails (IndexError) when the first sample has no image; the fast
    path's batch equals the processor's on the same samples in an order it handles."""
    processor = _processor()
    examples = _examples(12, "tmi")
    with pytest.raises(CollateError, match="IndexError"):
        mllama_collate_fn(examples, processor, shift=False, fast_path=False)
    fast = dict(mllama_collate_fn(examples, processor, shift=False))
    order = [1, 0, 2]  # the sample without images in the middle
    slow = dict(
        mllama_collate_fn([examples[i] for i in order], processor, shift=False, fast_path=False)
    )
    assert_same_batch(fast, _rows(slow, order))


# --------------------------------------------------------------------------- fallbacks


def _logged(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "fast path off" in r.getMessage()]


def _subclassed_processor():
    from transformers import MllamaProcessor

    class Custom(MllamaProcessor):
        pass

    base = mllama_processor()
    return Custom(base.image_processor, base.tokenizer, chat_template=base.chat_template)


def _subclassed_image_processor():
    from transformers import MllamaImageProcessor

    class Custom(MllamaImageProcessor):
        pass

    processor = mllama_processor()
    processor.image_processor = Custom(size={"height": 112, "width": 112}, max_image_tiles=4)
    return processor


def _changed(**change):
    def build():
        processor = mllama_processor()
        ip = processor.image_processor
        for attribute, value in change.items():
            # None: the method itself, set on the instance (a replacement the plan refuses).
            setattr(ip, attribute, getattr(ip, attribute) if value is None else value)
        return processor

    return build


def _processor_kwargs(**kwargs):
    def build():
        processor = mllama_processor()
        processor.images_kwargs = kwargs  # image kwargs the processor call passes
        return processor

    return build


@pytest.mark.parametrize(
    "build, reason",
    [
        (_subclassed_processor, "is not transformers' MllamaProcessor"),
        (_subclassed_image_processor, "is not transformers' MllamaImageProcessor"),
        (_changed(resample=3), "only bilinear is reproduced"),
        (_changed(resize=None), "resize is replaced on the instance"),
        (_changed(do_rescale=False, do_normalize=False), "uint8 pixel values"),
        (_processor_kwargs(max_image_tiles=2), "the processor passes max_image_tiles=2"),
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
    batch = mllama_collate_fn(_examples(1, "ii"), processor, shift=False)
    assert calls and "pixel_values" in batch


def test_fast_path_off_calls_the_processor(monkeypatch):
    processor = _processor()
    calls = processor_calls(monkeypatch, processor)
    mllama_collate_fn(_examples(2, "i"), processor, fast_path=False)
    assert calls


def test_placeholder_count_mismatch_is_left_to_the_processor_path():
    processor = _processor()
    assert tiled_encoding(processor, [f"{BOS}{IMAGE}{IMAGE}"], [[_image(9, 9, 0)]]) is None
