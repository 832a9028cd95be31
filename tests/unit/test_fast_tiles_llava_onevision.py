"""LLaVA-OneVision's tiled fast path against the processor call it replaces: every key
equal (ids, masks, labels, ``image_sizes``, ``batch_num_images`` exactly; pixels bit for
bit), for images of many sizes and aspect ratios: an image alone in its sample is tiled
any-resolution (base image + the best grid pinpoint's 384² patches, black padding), an
image among several is padded to a square with the mean colour and resized; patches
padded with 0.0 to the batch's most. The offline builder uses the published sizes
(SigLIP 384, pinpoints 384² to 2304², ``anyres_max_9``). Settings it does not reproduce
fall back to the processor, the reason logged once."""

from __future__ import annotations

import functools
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import assert_same_batch, assistant, user
from vlm_collate import VLMCollator, testing
from vlm_collate.families.llava_onevision import llava_onevision_collate_fn
from vlm_collate.pipeline.fast_tiles import tiled_encoding
from vlm_collate.processor.tiles import tile_plan
from vlm_collate.testing.families import llava_onevision_processor

PIXEL_TOLERANCE = 0.0
"""Largest difference allowed between fast-path and processor pixel values (measured: 0)."""

PH = "<image>"


@functools.cache
def _processor():
    """One processor for the tests that do not change it."""
    return llava_onevision_processor()


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


def _patches(processor, h: int, w: int) -> int:
    plan = tile_plan(processor)
    assert plan is not None
    tiles = plan.image_tiles(h, w)
    assert tiles is not None
    return len(tiles.windows)


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow)])
def test_encoding_equals_the_processor_call(seed):
    processor = _processor()
    rng = np.random.default_rng(seed)
    # Alone in their samples: up- and downscaled, 1x1, extreme aspect ratios, the patch
    # size exactly. In samples of several: wide, tall, square, 1x1.
    alone = [(100, 150), (700, 500), (13, 400), (1, 1), (384, 384), (1100, 56)]
    several = [(300, 700), (1, 1), (500, 200), (64, 64), (2, 900)]
    images = [_image(rng, h, w, smooth=(k + seed) % 2 == 0) for k, (h, w) in enumerate(alone)]
    more = [_image(rng, h, w, smooth=(k + seed) % 2 == 1) for k, (h, w) in enumerate(several)]
    per_sample = [[images[0]], [], more[:2], [images[1]], more[2:], *([i] for i in images[2:])]
    texts = [
        "a " + PH + " one",
        "text only",
        PH + "x\n\n" + PH + " y",
        "z" + PH,
        f"\n\n{PH}\n{PH}.{PH}",
        *(f"q{k} {PH}" for k in range(4)),
    ]
    slow = _call(processor, texts, per_sample)
    fast = tiled_encoding(processor, texts, per_sample, add_special_tokens=False)
    assert fast is not None
    assert_same_batch(fast, slow, PIXEL_TOLERANCE)
    # Patch counts differ (zero padding used) and the grid reaches several patches.
    counts = {_patches(processor, h, w) for h, w in alone}
    assert 1 + 1 in counts and max(counts) >= 3
    assert fast["pixel_values"].shape[:2] == (len(alone) + len(several), max(counts))


@pytest.mark.slow
def test_large_images_use_the_large_pinpoints():
    processor = _processor()
    rng = np.random.default_rng(2)
    # 4:3 and 16:9 photos, a panorama, a tall scan: grids up to 6 x 6 pinpoints.
    shapes = [(1536, 2048), (1080, 1920), (300, 2500), (2600, 900), (448, 448)]
    images = [[_image(rng, h, w, smooth=k % 2 == 0)] for k, (h, w) in enumerate(shapes)]
    texts = [f"{PH} photo {k}" for k in range(len(shapes))]
    slow = _call(processor, texts, images)
    fast = tiled_encoding(processor, texts, images, add_special_tokens=False)
    assert fast is not None
    assert_same_batch(fast, slow, PIXEL_TOLERANCE)
    assert max(_patches(processor, h, w) for h, w in shapes) == 25  # 4 x 6 grid + base


def test_text_only_batch_has_no_image_keys():
    processor = _processor()
    texts = ["no image here", "nor here"]
    slow = _call(processor, texts, [[], []])
    fast = tiled_encoding(processor, texts, [[], []], add_special_tokens=False)
    assert fast is not None and "pixel_values" not in fast and "image_sizes" not in fast
    assert_same_batch(fast, slow)


def test_image_runs_and_batch_keys():
    processor = _processor()
    image_id = processor.tokenizer.convert_tokens_to_ids(PH)
    rng = np.random.default_rng(3)
    images = [[_image(rng, 200, 500, True)], [], [_image(rng, 50, 50, False)] * 2]
    fast = tiled_encoding(processor, [f"see {PH}", "none", f"{PH}{PH}"], images)
    assert fast is not None
    runs = (fast["input_ids"] == image_id).sum(1).tolist()
    # One image of several: num_image_tokens + 1 (its newline) each.
    assert runs[1:] == [0, 2 * (processor.num_image_tokens + 1)]
    assert runs[0] == processor._get_number_of_features(200, 500, 384, 384)
    assert fast["image_sizes"].tolist() == [[200, 500], [50, 50], [50, 50]]
    assert fast["batch_num_images"].tolist() == [1, 2]
    # The images of several have one patch each, the rest zeros up to the tiled one's.
    pixels = fast["pixel_values"]
    assert pixels.shape[1] == _patches(processor, 200, 500) and pixels.shape[1] > 1
    assert not pixels[1:, 1:].any() and pixels[1:, 0].abs().sum() > 0


def test_half_precision_pixels_equal_the_cast_processor_output():
    processor = _processor()
    rng = np.random.default_rng(4)
    images = [[_image(rng, 90, 300, False)], [_image(rng, 9, 30, True)] * 2]
    texts = [PH + " what", PH + PH]
    slow = _call(processor, texts, images)
    for dtype in (torch.bfloat16, torch.float16):
        fast = tiled_encoding(processor, texts, images, pixel_dtype=dtype)
        assert fast is not None and fast["pixel_values"].dtype == dtype
        assert torch.equal(fast["pixel_values"], slow["pixel_values"].to(dtype))


def _default_strategy():
    processor = llava_onevision_processor()
    processor.vision_feature_select_strategy = "default"
    return processor


def _changed(**settings):
    def build():
        processor = llava_onevision_processor()
        for attribute, value in settings.items():
            setattr(processor.image_processor, attribute, value)
        return processor

    return build


@pytest.mark.parametrize(
    "build",
    [
        _changed(resample=2),  # bilinear: the engine's other kernel
        # Another mean: another multi-image pad colour; CLIP's (not 0.5 each).
        _changed(image_mean=[0.48145466, 0.4578275, 0.40821073], image_std=[0.3, 0.2, 0.1]),
        _changed(image_grid_pinpoints=[[384, 768], [768, 384], [768, 768], [1152, 384]]),
        _default_strategy,  # one token fewer per image
    ],
    ids=["bilinear", "mean", "pinpoints", "default_strategy"],
)
def test_settings_it_reproduces(build):
    processor = build()
    rng = np.random.default_rng(5)
    shapes = [(60, 500), (333, 222), (1, 1), (900, 900), (40, 70)]
    images = [[_image(rng, h, w, smooth=False)] for h, w in shapes[:4]]
    images[1].append(_image(rng, *shapes[4], smooth=True))
    texts = [f"{PH} q{i}" for i in range(4)]
    texts[1] += PH
    slow = _call(processor, texts, images)
    fast = tiled_encoding(processor, texts, images, add_special_tokens=False)
    assert fast is not None
    assert_same_batch(fast, slow, PIXEL_TOLERANCE)


def _examples(seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    examples = []
    for i in range(4):
        content = []
        if i != 1:
            h, w = (448, 448) if i == 0 else (40 + 97 * i, 300 - 70 * i)
            content.append({"type": "image", "image": _image(rng, h, w, i > 1)})
        if i == 3:
            content.append({"type": "image", "image": _image(rng, 1, 700, False)})
        content.append(f"What is in picture {i}?")
        messages = [user(*content), assistant(f"Answer {i}: " + "shapes " * (i + 1))]
        if i % 2:
            messages += [user("And then?"), assistant("Nothing more.")]
        examples.append({"messages": messages})
    return examples


def test_collate_equals_the_processor_path(monkeypatch):
    processor = _processor()
    examples = _examples(0)
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
    seeded = llava_onevision_collate_fn(examples, processor, shift=False)
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
    fast = llava_onevision_collate_fn(examples, processor, shift=False)
    assert calls  # a batch with a video is the processor's
    slow = llava_onevision_collate_fn(examples, processor, shift=False, fast_path=False)
    assert_same_batch(dict(fast), dict(slow))
    assert "pixel_values" in fast


# --------------------------------------------------------------------------- fallbacks


def _logged(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "fast path off" in r.getMessage()]


def _subclassed():
    processor = llava_onevision_processor()
    processor.__class__ = type("MyOnevisionProcessor", (type(processor),), {})
    return processor


def _pil_backend():
    from transformers.models.llava_onevision.image_processing_pil_llava_onevision import (
        LlavaOnevisionImageProcessorPil,
    )

    processor = llava_onevision_processor()
    ip = processor.image_processor
    processor.image_processor = LlavaOnevisionImageProcessorPil(
        size=dict(ip.size),
        image_grid_pinpoints=ip.image_grid_pinpoints,
        image_mean=ip.image_mean,
        image_std=ip.image_std,
    )
    return processor


def _replaced(name):
    def build():
        processor = llava_onevision_processor()
        ip = processor.image_processor
        setattr(ip, name, getattr(ip, name))  # a method set on the instance
        return processor

    return build


@pytest.mark.parametrize(
    "build, reason",
    [
        (_subclassed, "is not transformers' LlavaOnevisionProcessor"),
        (_pil_backend, "ImageProcessorPil is not transformers' LlavaOnevisionImageProcessor"),
        (_replaced("pad_to_square"), "pad_to_square is replaced on the instance"),
        (_changed(resample=0), "bicubic and bilinear are reproduced"),
        (_changed(do_pad=False), "do_pad=False"),
        (_changed(image_grid_pinpoints=[[384, 500]]), "not positive multiples of 384"),
        (_changed(do_rescale=False, do_normalize=False), "uint8 pixel values"),
    ],
    ids=["subclass", "pil", "replaced", "resample", "do_pad", "pinpoints", "uint8"],
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
    image = {"type": "image", "image": _image(rng, 300, 120, False)}
    examples = [{"messages": [user(image, "what?"), assistant("this")]}]
    with caplog.at_level(logging.INFO, logger="vlm_collate"):
        assert tiled_encoding(processor, [PH + " x"], [[_image(rng, 30, 40, True)]]) is None
        fast = VLMCollator(processor)(examples)
        VLMCollator(processor)(examples)
    assert len(calls) == 2  # the processor made both batches
    logged = _logged(caplog)
    assert len(logged) == 1 and reason in logged[0], logged
    slow = VLMCollator(processor, fast_path=False)(examples)
    assert_same_batch(dict(fast), dict(slow))
