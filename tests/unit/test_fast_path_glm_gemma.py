"""The fast path of GLM-4.1V and Gemma 3 images against the processor call it replaces:
every key, ids, grids and token types exactly, pixel values bit for bit (GLM-4.1V: its
own ``smart_resize``, antialiased bicubic, patches; Gemma 3: a fixed bilinear antialiased
resize, channels-first images, ``<start_of_image>`` expanded into its block). Settings it
does not reproduce fall back to the processor (logged once)."""

from __future__ import annotations

import functools
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import assert_same_batch, assistant, user
from vlm_collate import engine
from vlm_collate.errors import EngineError
from vlm_collate.families.gemma3 import gemma3_collate_fn
from vlm_collate.families.glm4v import glm4v_collate_fn
from vlm_collate.pipeline.fast_path import fast_encoding
from vlm_collate.testing.families import gemma3_processor, glm4v_processor

PIXEL_TOLERANCE = 0.0
"""Largest difference allowed between fast-path and processor pixel values (measured: 0)."""

PLACEHOLDER = {
    "glm4v": "<|begin_of_image|><|image|><|end_of_image|>",
    "gemma3": "<start_of_image>",
}
BUILDERS = {"glm4v": glm4v_processor, "gemma3": gemma3_processor}
COLLATE = {"glm4v": glm4v_collate_fn, "gemma3": gemma3_collate_fn}


@functools.cache
def _processor(name: str):
    """One processor per family for the tests that do not change it."""
    return BUILDERS[name]()


@pytest.fixture(params=sorted(BUILDERS))
def family(request):
    return request.param, _processor(request.param)


def _image(rng: np.random.Generator, h: int, w: int, smooth: bool) -> Image.Image:
    if smooth:  # gradients and sharp edges
        y, x = np.mgrid[0:h, 0:w]
        array = np.stack([x % 256, (y * 3) % 256, ((x ^ y) * 7) % 256], -1).astype(np.uint8)
    else:
        array = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return Image.fromarray(array)


def _call(name: str, processor, texts, images) -> dict:
    kwargs = {}
    if any(images):
        # Gemma 3 takes the images per sample, GLM-4.1V flattened (as the encode step does).
        kwargs["images"] = images if name == "gemma3" else [i for s in images for i in s]
    return dict(
        processor(text=texts, padding=True, padding_side="right", return_tensors="pt", **kwargs)
    )


def _assert_same(fast: dict, slow: dict) -> None:
    assert_same_batch(fast, slow, PIXEL_TOLERANCE)


@pytest.mark.parametrize("seed", [0, 1])
def test_image_encoding_equals_the_processor_call(family, seed):
    name, processor = family
    rng = np.random.default_rng(seed)
    ph = PLACEHOLDER[name]
    # Up- and downscaled, 1x1, extreme aspect ratios, the target size itself, noise and
    # smooth images, a text-only sample, two images in one sample next to "\n\n".
    shapes = [(100, 150), (700, 500), (13, 400), (1, 1), (224, 224), (56, 1100)]
    images = [_image(rng, h, w, smooth=(k + seed) % 2 == 0) for k, (h, w) in enumerate(shapes)]
    per_sample = [[images[0]], [], [images[1], images[2]], [images[3]], images[4:]]
    texts = [
        "a " + ph + " one",
        "text only",
        ph + "x\n\n" + ph + " y",
        "z" + ph,
        f"\n\n{ph}\n{ph}.",
    ]
    slow = _call(name, processor, texts, per_sample)
    fast = fast_encoding(processor, texts, per_sample)
    assert fast is not None
    _assert_same(fast, slow)
    types = "token_type_ids" if name == "gemma3" else "mm_token_type_ids"
    assert int((fast[types] == 1).sum()) > 0


def test_gemma3_blocks_hold_the_soft_tokens():
    processor = _processor("gemma3")
    tokenizer = processor.tokenizer
    rng = np.random.default_rng(3)
    fast = fast_encoding(processor, ["see <start_of_image> here"], [[_image(rng, 30, 40, True)]])
    assert fast is not None
    ids = fast["input_ids"][0].tolist()
    soft = tokenizer.convert_tokens_to_ids(tokenizer.image_token)
    start = ids.index(tokenizer.convert_tokens_to_ids(tokenizer.boi_token))
    assert ids[start + 1 : start + 257] == [soft] * 256
    assert ids[start + 257] == tokenizer.convert_tokens_to_ids(tokenizer.eoi_token)
    assert fast["token_type_ids"][0].tolist() == [int(i == soft) for i in ids]
    assert fast["pixel_values"].shape == (1, 3, 224, 224)


def test_half_precision_pixels_equal_the_cast_processor_output(family):
    name, processor = family
    rng = np.random.default_rng(4)
    images = [[_image(rng, 90, 120, False)]]
    texts = [PLACEHOLDER[name] + " what"]
    slow = _call(name, processor, texts, images)
    for dtype in (torch.bfloat16, torch.float16):
        fast = fast_encoding(processor, texts, images, pixel_dtype=dtype)
        assert fast is not None and fast["pixel_values"].dtype == dtype
        assert torch.equal(fast["pixel_values"], slow["pixel_values"].to(dtype))


def test_glm4v_image_tokens_inside_a_video_span_are_type_2():
    processor = glm4v_processor()
    ph = PLACEHOLDER["glm4v"]
    texts = ["<|begin_of_video|>" + ph + "<|end_of_video|> then " + ph]
    images = [[_image(np.random.default_rng(0), 60, 60, True)] * 2]
    slow = _call("glm4v", processor, texts, images)
    fast = fast_encoding(processor, texts, images)
    assert fast is not None
    _assert_same(fast, slow)
    assert set(fast["mm_token_type_ids"][0].tolist()) == {0, 1, 2}


def _examples(name: str, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    examples = []
    for i in range(4):
        content = []
        if i != 1:
            content.append({"type": "image", "image": _image(rng, 40 + 37 * i, 90 - 9 * i, i > 1)})
        content.append(f"What is in picture {i}?")
        messages = [user(*content), assistant(f"Answer {i}: " + "shapes " * (i + 1))]
        if i % 2:
            messages += [user("And then?"), assistant("Nothing more.")]
        examples.append({"messages": messages})
    return examples


def test_collate_equals_the_processor_path(family, monkeypatch):
    name, processor = family
    examples = _examples(name, 0)
    calls = []
    original = type(processor).__call__
    monkeypatch.setattr(
        type(processor),
        "__call__",
        lambda self, *a, **k: calls.append(1) or original(self, *a, **k),
    )
    fast = COLLATE[name](examples, processor, shift=False)
    assert not calls  # the fast path made the batch
    slow = COLLATE[name](examples, processor, shift=False, fast_path=False)
    assert calls
    _assert_same(dict(fast), dict(slow))
    assert "pixel_values" in fast and (fast["labels"] != -100).any()


# --------------------------------------------------------------------------- fallbacks


def _logged(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "fast path off" in r.getMessage()]


@pytest.mark.parametrize(
    "name, change, reason",
    [
        pytest.param(
            "gemma3",
            {"pan_and_scan_batched": None},
            "pan_and_scan_batched is replaced on the instance",
            marks=pytest.mark.slow,
        ),
        pytest.param(
            "gemma3", {"resample": 3}, "only bilinear is reproduced", marks=pytest.mark.slow
        ),
        ("glm4v", {"resample": 2}, "only bicubic is reproduced"),
        ("glm4v", {"resize": None}, "resize is replaced on the instance"),
    ],
)
def test_settings_it_does_not_reproduce_fall_back_logged_once(name, change, reason, caplog):
    processor = BUILDERS[name]()
    ip = processor.image_processor
    for attribute, value in change.items():
        # None: the method itself, set on the instance (a replacement the plan refuses).
        setattr(ip, attribute, getattr(ip, attribute) if value is None else value)
    rng = np.random.default_rng(1)
    texts = [PLACEHOLDER[name] + " x"]
    images = [[_image(rng, 300, 120, False)]]
    with caplog.at_level(logging.INFO, logger="vlm_collate"):
        assert fast_encoding(processor, texts, images) is None
        assert fast_encoding(processor, texts, images) is None
    logged = _logged(caplog)
    assert len(logged) == 1 and reason in logged[0], logged
    # The collate still works: it calls the processor.
    batch = COLLATE[name](_examples(name, 1), processor, shift=False)
    assert "pixel_values" in batch


@pytest.mark.slow
def test_gemma3_image_processor_pan_and_scan_attribute_is_overridden_by_the_call():
    # Gemma3Processor's images_kwargs pass do_pan_and_scan=False on every call: the fast
    # path does the same (pan-and-scan itself: test_fast_path_gemma3_pan_and_scan.py).
    processor = gemma3_processor()
    processor.image_processor.do_pan_and_scan = True
    examples = _examples("gemma3", 2)
    fast = gemma3_collate_fn(examples, processor, shift=False)
    slow = gemma3_collate_fn(examples, processor, shift=False, fast_path=False)
    _assert_same(dict(fast), dict(slow))


def test_bad_plane_engine_arguments_are_errors():
    table = np.zeros(768, dtype=np.float32)
    good = np.zeros((10, 12, 3), dtype=np.uint8)
    targets = np.array([[8, 8]], dtype=np.int64)
    out = np.zeros((1, 3 * 64), dtype=np.float32)
    engine.write_planes([good], targets, out, table, "bilinear")
    with pytest.raises(EngineError, match="interpolation must be 'bilinear' or 'bicubic'"):
        engine.write_planes([good], targets, out, table, "nearest")
    with pytest.raises(EngineError, match=r"images\[0\] has shape"):
        engine.write_planes([good[..., :2].copy()], targets, out, table, "bilinear")
    with pytest.raises(EngineError, match="out holds"):
        engine.write_planes([good], targets, out[:, :10], table, "bilinear")
    with pytest.raises(EngineError, match="table must hold"):
        engine.write_planes([good], targets, out, table[:5], "bilinear")
