"""InternVL's tiled fast path against the processor call it replaces: every key equal
(ids, masks, labels exactly; pixels bit for bit), for images of many sizes and aspect
ratios (grid of 448-pixel tiles chosen by transformers' ``get_optimal_tiled_canvas``,
thumbnail after a grid of more than one tile), at the offline builder's
``max_patches=2`` and the published 12; settings it does not reproduce fall back to the
processor, the reason logged once."""

from __future__ import annotations

import dataclasses
import functools
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import assert_same_batch, assistant, user
from vlm_collate import VLMCollator, testing
from vlm_collate.families.internvl import internvl_collate_fn
from vlm_collate.pipeline.fast_tiles import tiled_encoding
from vlm_collate.processor.profile import profile_of
from vlm_collate.processor.tiles import tile_plan
from vlm_collate.processor.tiles.internvl import alone_id
from vlm_collate.testing.families import internvl_processor

PIXEL_TOLERANCE = 0.0
"""Largest difference allowed between fast-path and processor pixel values (measured: 0)."""

PH = "<IMG_CONTEXT>"


@functools.cache
def _processor(max_patches: int = 2):
    """One processor per size for the tests that do not change it."""
    return internvl_processor(max_patches=max_patches)


def _image(rng: np.random.Generator, h: int, w: int, smooth: bool) -> Image.Image:
    if smooth:  # gradients and sharp edges
        y, x = np.mgrid[0:h, 0:w]
        array = np.stack([x % 256, (y * 3) % 256, ((x ^ y) * 7) % 256], -1).astype(np.uint8)
    else:
        array = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return Image.fromarray(array)


def _call(processor, texts, images) -> dict:
    kwargs = {"images": images} if any(images) else {}
    return dict(
        processor(
            text=texts,
            padding=True,
            padding_side="right",
            add_special_tokens=False,
            return_tensors="pt",
            **kwargs,
        )
    )


def _tiles(processor, h: int, w: int) -> int:
    plan = tile_plan(processor)
    assert plan is not None
    return len(plan.image_tiles(h, w).windows)


@pytest.mark.parametrize("seed", [0, 1])
def test_encoding_equals_the_processor_call(seed):
    processor = _processor()
    rng = np.random.default_rng(seed)
    # Up- and downscaled, 1x1, extreme aspect ratios both ways, a tile exactly, the 2x1
    # grid exactly (a resize to the same size), noise and smooth images.
    shapes = [(100, 150), (700, 500), (13, 400), (1, 1), (448, 448), (448, 896), (1100, 56)]
    images = [_image(rng, h, w, smooth=(k + seed) % 2 == 0) for k, (h, w) in enumerate(shapes)]
    per_sample = [[images[0]], [], [images[1], images[2]], [images[3]], images[4:]]
    texts = [
        "a " + PH + " one",
        "text only",
        PH + "x\n\n" + PH + " y",
        "z" + PH,
        f"\n\n{PH}\n{PH}.{PH}",
    ]
    slow = _call(processor, texts, per_sample)
    fast = tiled_encoding(processor, texts, per_sample)
    assert fast is not None
    assert_same_batch(fast, slow, PIXEL_TOLERANCE)
    # Grids of one tile (no thumbnail) and of two (plus the thumbnail) both occur.
    assert {_tiles(processor, h, w) for h, w in shapes} == {1, 3}
    assert fast["pixel_values"].shape[0] == sum(_tiles(processor, h, w) for h, w in shapes)


@pytest.mark.slow
def test_published_sizes_equal_the_processor_call():
    processor = _processor(12)
    rng = np.random.default_rng(2)
    # 448² (1 tile), 4:3 and 16:9 photos, a panorama (12 x 1 tiles), tall and tiny.
    shapes = [(448, 448), (600, 800), (720, 1280), (200, 2400), (1000, 300), (2, 3)]
    images = [_image(rng, h, w, smooth=k % 2 == 0) for k, (h, w) in enumerate(shapes)]
    per_sample = [images[:2], [], images[2:4], images[4:]]
    texts = [f"{PH} and {PH}", "none", f"{PH}{PH}", f"x {PH} y {PH}"]
    slow = _call(processor, texts, per_sample)
    fast = tiled_encoding(processor, texts, per_sample)
    assert fast is not None
    assert_same_batch(fast, slow, PIXEL_TOLERANCE)
    counts = [_tiles(processor, h, w) for h, w in shapes]
    assert max(counts) == 13 and 1 in counts  # 12 tiles + thumbnail, and one tile
    assert fast["pixel_values"].shape == (sum(counts), 3, 448, 448)


def test_text_only_batch_has_no_pixel_values():
    processor = _processor()
    texts = ["no image here", "nor here"]
    slow = _call(processor, texts, [[], []])
    fast = tiled_encoding(processor, texts, [[], []])
    assert fast is not None and "pixel_values" not in fast
    assert_same_batch(fast, slow)


def test_image_block_holds_256_context_tokens_per_tile():
    processor = _processor()
    tokenizer = processor.tokenizer
    image = _image(np.random.default_rng(3), 200, 500, True)  # 2 x 1 grid + thumbnail
    fast = tiled_encoding(processor, [f"see {PH} here"], [[image]])
    assert fast is not None
    ids = fast["input_ids"][0].tolist()
    start = ids.index(tokenizer.convert_tokens_to_ids("<img>"))
    context = tokenizer.convert_tokens_to_ids(PH)
    assert ids[start + 1 : start + 1 + 3 * 256] == [context] * (3 * 256)
    assert ids[start + 1 + 3 * 256] == tokenizer.convert_tokens_to_ids("</img>")
    assert fast["pixel_values"].shape == (3, 3, 448, 448)


def test_half_precision_pixels_equal_the_cast_processor_output():
    processor = _processor()
    images = [[_image(np.random.default_rng(4), 90, 300, False)]]
    texts = [PH + " what"]
    slow = _call(processor, texts, images)
    for dtype in (torch.bfloat16, torch.float16):
        fast = tiled_encoding(processor, texts, images, pixel_dtype=dtype)
        assert fast is not None and fast["pixel_values"].dtype == dtype
        assert torch.equal(fast["pixel_values"], slow["pixel_values"].to(dtype))


@pytest.mark.parametrize(
    "change",
    [
        {"resample": 2},  # bilinear: the engine's other kernel
        {"max_patches": 6, "min_patches": 2},  # read from the image processor
        {"image_mean": [0.1, 0.2, 0.3], "image_std": [0.5, 0.6, 0.7], "rescale_factor": 1 / 200},
    ],
)
def test_settings_it_reproduces(change):
    processor = internvl_processor()
    for attribute, value in change.items():
        setattr(processor.image_processor, attribute, value)
    rng = np.random.default_rng(5)
    shapes = [(60, 500), (333, 222), (1, 1), (900, 900)]
    images = [[_image(rng, h, w, smooth=False)] for h, w in shapes]
    texts = [f"{PH} q{i}" for i in range(len(shapes))]
    slow = _call(processor, texts, images)
    fast = tiled_encoding(processor, texts, images)
    assert fast is not None
    assert_same_batch(fast, slow, PIXEL_TOLERANCE)


def test_crop_to_patches_off_at_processor_level_is_one_tile_per_image():
    processor = internvl_processor()
    processor.images_kwargs = {"crop_to_patches": False}  # the class default, overridden
    rng = np.random.default_rng(6)
    images = [[_image(rng, 100, 900, True)], [_image(rng, 500, 40, False)]]
    texts = [f"{PH} a", f"b {PH}"]
    slow = _call(processor, texts, images)
    fast = tiled_encoding(processor, texts, images)
    assert fast is not None and fast["pixel_values"].shape[0] == 2
    assert_same_batch(fast, slow, PIXEL_TOLERANCE)


def _examples(seed: int, published: bool = False) -> list[dict]:
    rng = np.random.default_rng(seed)
    examples = []
    for i in range(4):
        content = []
        if i != 1:
            h, w = (448, 448) if published and i == 0 else (40 + 97 * i, 300 - 70 * i)
            content.append({"type": "image", "image": _image(rng, h, w, i > 1)})
        if i == 3:
            content.append({"type": "image", "image": _image(rng, 1, 700, False)})
        content.append(f"What is in picture {i}?")
        messages = [user(*content), assistant(f"Answer {i}: " + "shapes " * (i + 1))]
        if i % 2:
            messages += [user("And then?"), assistant("Nothing more.")]
        examples.append({"messages": messages})
    return examples


@pytest.mark.parametrize(
    "max_patches", [2, pytest.param(12, marks=pytest.mark.slow)], ids=["builder", "published"]
)
def test_collate_equals_the_processor_path(max_patches, monkeypatch):
    processor = _processor(max_patches)
    examples = _examples(0, published=max_patches == 12)
    calls = []
    original = type(processor).__call__
    monkeypatch.setattr(
        type(processor),
        "__call__",
        lambda self, *a, **k: calls.append(1) or original(self, *a, **k),
    )
    fast = VLMCollator(processor)(examples)
    assert not calls  # the fast path made the batch
    slow = VLMCollator(processor, fast_path=False)(examples)
    assert calls
    assert_same_batch(dict(fast), dict(slow), PIXEL_TOLERANCE)
    assert "pixel_values" in fast and (fast["labels"] != -100).any()
    seeded = internvl_collate_fn(examples, processor, shift=False)
    assert_same_batch(dict(seeded), dict(slow), PIXEL_TOLERANCE)


def test_a_batch_with_a_video_calls_the_processor(monkeypatch):
    processor = _processor()
    calls = []
    original = type(processor).__call__
    monkeypatch.setattr(
        type(processor),
        "__call__",
        lambda self, *a, **k: calls.append(1) or original(self, *a, **k),
    )
    video = {"type": "video", "video": testing.video(frames=4)}
    examples = [{"messages": [user(video, "What happens?"), assistant("Things.")]}, *_examples(1)]
    fast = internvl_collate_fn(examples, processor, shift=False)
    assert calls  # a batch with a video is the processor's
    slow = internvl_collate_fn(examples, processor, shift=False, fast_path=False)
    assert_same_batch(dict(fast), dict(slow))
    assert "pixel_values" in fast


# --------------------------------------------------------------------------- fallbacks


def _logged(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "fast path off" in r.getMessage()]


def _subclassed():
    processor = internvl_processor()
    processor.__class__ = type("MyInternVLProcessor", (type(processor),), {})
    return processor


def _replaced_resize():
    processor = internvl_processor()
    ip = processor.image_processor
    ip.resize = ip.resize  # a method set on the instance
    return processor


def _changed(**settings):
    def build():
        processor = internvl_processor()
        for attribute, value in settings.items():
            setattr(processor.image_processor, attribute, value)
        return processor

    return build


def _pil_backend():
    from transformers.models.got_ocr2.image_processing_pil_got_ocr2 import (
        GotOcr2ImageProcessorPil,
    )

    processor = internvl_processor()
    ip = processor.image_processor
    processor.image_processor = GotOcr2ImageProcessorPil(
        size=dict(ip.size),
        max_patches=ip.max_patches,
        image_mean=ip.image_mean,
        image_std=ip.image_std,
    )
    return processor


def _processor_kwargs():
    processor = internvl_processor()
    processor.images_kwargs = {"crop_to_patches": True, "do_normalize": False}
    return processor


@pytest.mark.parametrize(
    "build, reason",
    [
        (_subclassed, "is not transformers' InternVLProcessor"),
        (_pil_backend, "GotOcr2ImageProcessorPil is not transformers' GotOcr2ImageProcessor"),
        (_replaced_resize, "resize is replaced on the instance"),
        (_changed(resample=0), "bicubic and bilinear are reproduced"),
        (_changed(do_resize=False), "do_resize=False"),
        (_changed(do_rescale=False, do_normalize=False), "uint8 pixel values"),
        (_processor_kwargs, "images_kwargs set do_normalize"),
    ],
    ids=["subclass", "pil", "replaced", "resample", "do_resize", "uint8", "processor_kwargs"],
)
def test_settings_it_does_not_reproduce_fall_back_logged_once(build, reason, caplog, monkeypatch):
    processor = build()
    calls = []
    original = type(processor).__call__
    monkeypatch.setattr(
        type(processor),
        "__call__",
        lambda self, *a, **k: calls.append(1) or original(self, *a, **k),
    )
    rng = np.random.default_rng(1)
    examples = [
        {
            "messages": [
                user({"type": "image", "image": _image(rng, 300, 120, False)}, "what?"),
                assistant("this"),
            ]
        }
    ]
    with caplog.at_level(logging.INFO, logger="vlm_collate"):
        assert tiled_encoding(processor, [PH + " x"], [[_image(rng, 30, 40, True)]]) is None
        fast = VLMCollator(processor)(examples)
        VLMCollator(processor)(examples)
    assert len(calls) == 2  # the processor made both batches
    logged = _logged(caplog)
    assert len(logged) == 1 and reason in logged[0], logged
    slow = VLMCollator(processor, fast_path=False)(examples)
    assert_same_batch(dict(fast), dict(slow))


def test_context_runs_written_by_the_engine_or_in_full_are_the_same():
    processor = _processor()
    plan = tile_plan(processor)
    assert plan is not None
    assert plan.repeated() == processor.tokenizer.convert_tokens_to_ids(PH)
    rng = np.random.default_rng(7)
    images = [[_image(rng, 200, 500, True), _image(rng, 50, 50, False)], []]
    texts = [f"a {PH} b {PH}", "c"]
    slow = _call(processor, texts, images)
    assert_same_batch(tiled_encoding(processor, texts, images), slow)
    # The same plan writing each block's text in full (a tokenizer whose context token
    # is not a special token would get this plan).
    profile = profile_of(processor)
    full = dataclasses.replace(plan, context_id=None)
    assert full.repeated() is None and full.image_tiles(200, 500).repeats == ()
    profile._memo["tile_plan"] = full
    try:
        assert_same_batch(tiled_encoding(processor, texts, images), slow)
    finally:
        profile._memo["tile_plan"] = plan


def test_alone_id_refuses_a_token_that_is_not_an_added_token():
    tokenizer = _processor().tokenizer
    assert alone_id(tokenizer, "<img>", PH, "</img>") == tokenizer.convert_tokens_to_ids(PH)
    assert alone_id(tokenizer, "<img>", "a", "</img>") is None  # "aaa" is one token
    ab = tokenizer.convert_tokens_to_ids("ab")
    assert tokenizer("ababab", add_special_tokens=False)["input_ids"] == [ab] * 3
    assert alone_id(tokenizer, "<img>", "ab", "</img>") is None  # alone here, not added
