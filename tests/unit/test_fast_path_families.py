"""The fast path per family and media kind against the processor call it replaces: every
key, ids and grids exactly, pixel values bit for bit; settings it does not reproduce fall
back to the processor (logged once)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import assert_same_batch, assistant, user
from vlm_collate import engine, qwen2_5_collate_fn
from vlm_collate.errors import EngineError
from vlm_collate.pipeline.fast_path import fast_encoding, fast_plan
from vlm_collate.testing.builders import qwen2_5_vl_processor
from vlm_collate.testing.families import qwen2_vl_processor

VIDEO_BUILDERS = {"qwen2_vl": qwen2_vl_processor, "qwen2_5_vl": qwen2_5_vl_processor}
PIXEL_TOLERANCE = 0.0
"""Largest difference allowed between fast-path and processor pixel values (measured: 0)."""

VIDEO = "<|vision_start|><|video_pad|><|vision_end|>"
IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"


@pytest.fixture(scope="module", params=sorted(VIDEO_BUILDERS))
def video_processor(request):
    processor = VIDEO_BUILDERS[request.param]()
    # The processor's own default, set explicitly: silences transformers' warning only.
    processor.video_processor.cap_pixels_per_frame = False
    return processor


def _frames(rng: np.random.Generator, t: int, h: int, w: int, smooth: bool) -> np.ndarray:
    if smooth:  # gradients and edges moving across frames
        y, x = np.mgrid[0:h, 0:w]
        return np.stack(
            [np.stack([(x + 7 * k) % 256, (y * 3 + k) % 256, (x ^ y) % 256], -1) for k in range(t)]
        ).astype(np.uint8)
    return rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def _as_pil(video: np.ndarray) -> list[Image.Image]:
    return [Image.fromarray(frame) for frame in video]


def _assert_same(fast: dict, slow: dict) -> None:
    assert_same_batch(fast, slow, PIXEL_TOLERANCE)


def _call(processor, texts, images, videos) -> dict:
    kwargs = {}
    flat_images = [i for s in images for i in s]
    flat_videos = [v for s in videos for v in s]
    if flat_images:
        kwargs["images"] = flat_images
    if flat_videos:
        kwargs["videos"] = flat_videos
    return dict(
        processor(text=texts, padding=True, padding_side="right", return_tensors="pt", **kwargs)
    )


# --------------------------------------------------------------------------- Qwen videos


@pytest.mark.parametrize("as_frames", [False, True], ids=["arrays", "pil-frames"])
def test_video_encoding_equals_the_processor_call(video_processor, as_frames):
    rng = np.random.default_rng(11)
    # Frame counts odd and even (the last frame repeated to fill the last group), one
    # frame, sizes up- and downscaled, a text-only sample and an image beside videos.
    shapes = [(5, 60, 90), (1, 700, 500), (4, 300, 200), (2, 13, 400), (3, 56, 56)]
    clips = [_frames(rng, *s, smooth=k % 2 == 0) for k, s in enumerate(shapes)]
    if as_frames:
        clips = [_as_pil(c) for c in clips]
    videos = [[clips[0]], [], [clips[1], clips[2]], [clips[3], clips[4]]]
    image = Image.fromarray(rng.integers(0, 256, (50, 70, 3), dtype=np.uint8))
    images = [[image], [], [], []]
    texts = [
        IMAGE + VIDEO + "one",
        "text only",
        VIDEO + "a" + VIDEO + "b",
        "first " + VIDEO + " second " + VIDEO,
    ]
    slow = _call(video_processor, texts, images, videos)
    fast = fast_encoding(video_processor, texts, images, videos)
    assert fast is not None
    _assert_same(fast, slow)
    assert fast["video_grid_thw"][:, 0].tolist() == [3, 1, 2, 1, 2]
    assert ("second_per_grid_ts" in fast) == (
        type(video_processor).__name__ == "Qwen2_5_VLProcessor"
    )


def test_per_frame_cap_is_reproduced():
    processor = qwen2_5_vl_processor()
    vp = processor.video_processor
    vp.cap_pixels_per_frame, vp.max_video_tokens = True, 64  # a cap that binds
    rng = np.random.default_rng(5)
    videos = [[_frames(rng, 6, 320, 480, smooth=False)], [_frames(rng, 2, 200, 200, smooth=True)]]
    texts = [VIDEO + "x", VIDEO + "y"]
    slow = _call(processor, texts, [[], []], videos)
    uncapped = qwen2_5_vl_processor()
    uncapped.video_processor.cap_pixels_per_frame = False
    assert not torch.equal(
        slow["video_grid_thw"], _call(uncapped, texts, [[], []], videos)["video_grid_thw"]
    )
    fast = fast_encoding(processor, texts, [[], []], videos)
    assert fast is not None
    _assert_same(fast, slow)


def test_half_precision_video_pixels_equal_the_cast_processor_output():
    processor = qwen2_5_vl_processor()
    processor.video_processor.cap_pixels_per_frame = False
    rng = np.random.default_rng(2)
    videos = [[_frames(rng, 3, 90, 120, smooth=False)]]
    slow = _call(processor, [VIDEO], [[]], videos)
    for dtype in (torch.bfloat16, torch.float16):
        fast = fast_encoding(processor, [VIDEO], [[]], videos, pixel_dtype=dtype)
        assert fast is not None and fast["pixel_values_videos"].dtype == dtype
        assert torch.equal(fast["pixel_values_videos"], slow["pixel_values_videos"].to(dtype))


def _video_examples(seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    examples = []
    for i in range(4):
        content = []
        if i != 1:
            video = _frames(rng, 2 + i, 40 + 30 * i, 90 - 10 * i, smooth=bool(i % 2))
            content.append({"type": "video", "video": _as_pil(video) if i == 3 else video})
        if i == 2:
            image = Image.fromarray(rng.integers(0, 256, (64, 48, 3), dtype=np.uint8))
            content.append({"type": "image", "image": image})
        content.append(f"What happens in clip {i}?")
        messages = [user(*content), assistant(f"Answer {i}: " + "moving " * (i + 1))]
        if i % 2:
            messages += [user("And then?"), assistant("It stops.")]
        examples.append({"messages": messages})
    return examples


@pytest.mark.parametrize("seed", [0, 1])
def test_video_collate_equals_the_processor_path(video_processor, seed, monkeypatch):
    examples = _video_examples(seed)
    calls = []
    original = type(video_processor).__call__
    monkeypatch.setattr(
        type(video_processor),
        "__call__",
        lambda self, *a, **k: calls.append(1) or original(self, *a, **k),
    )
    fast = qwen2_5_collate_fn(examples, video_processor, shift=False)
    assert not calls  # the fast path made the batch
    slow = qwen2_5_collate_fn(examples, video_processor, shift=False, fast_path=False)
    assert calls
    _assert_same(dict(fast), dict(slow))
    assert "pixel_values_videos" in fast and "pixel_values" in fast
    assert (fast["labels"] != -100).any()


# --------------------------------------------------------------------------- fallbacks


def _logged_fallbacks(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "fast path off" in r.getMessage()]


def test_video_settings_it_does_not_reproduce_fall_back_logged_once(caplog):
    processor = qwen2_5_vl_processor()
    processor.video_processor.do_sample_frames = True
    rng = np.random.default_rng(0)
    videos = [[_frames(rng, 8, 40, 40, smooth=False)]]
    with caplog.at_level(logging.INFO, logger="vlm_collate"):
        plan = fast_plan(processor)
        assert plan is not None and plan.video is None  # images still take the fast path
        assert fast_encoding(processor, [VIDEO], [[]], videos) is None
        assert fast_encoding(processor, [VIDEO], [[]], videos) is None
    logged = _logged_fallbacks(caplog)
    assert len(logged) == 1 and "do_sample_frames=True" in logged[0], logged


@pytest.mark.parametrize(
    "video",
    [
        np.zeros((2, 3, 40, 40), dtype=np.uint8),  # channels first
        np.zeros((2, 40, 40, 4), dtype=np.uint8),  # RGBA
        [Image.new("RGB", (40, 40)), Image.new("RGB", (41, 40))],  # frames of two sizes
        [Image.new("L", (40, 40))],  # not RGB
    ],
    ids=["channels-first", "rgba", "mixed-sizes", "grey-frames"],
)
def test_videos_it_does_not_read_are_left_to_the_processor(video):
    processor = qwen2_5_vl_processor()
    assert fast_encoding(processor, [VIDEO], [[]], [[video]]) is None


def test_bad_video_engine_arguments_are_errors():
    table = np.zeros(768, dtype=np.float32)
    good = np.zeros((3, 28, 28, 3), dtype=np.uint8)
    targets = np.array([[28, 28]], dtype=np.int64)
    rows = engine.pixel_rows(targets, 14, 2, 2, np.array([3], dtype=np.int64))
    assert rows.tolist() == [8]  # 2 groups of 2x2 patches
    out = np.zeros((8, 1176), dtype=np.float32)
    engine.write_video_pixel_values([good], targets, out, table, 14, 2, 2)
    with pytest.raises(EngineError, match=r"videos\[0\] must be a \(frames, height, width, 3\)"):
        engine.write_video_pixel_values([good[0]], targets, out, table, 14, 2, 2)
    with pytest.raises(EngineError, match=r"videos\[0\] has shape"):
        engine.write_video_pixel_values([good[..., :2].copy()], targets, out, table, 14, 2, 2)
    with pytest.raises(EngineError, match=r"out holds"):
        engine.write_video_pixel_values([good], targets, out[:4], table, 14, 2, 2)
    with pytest.raises(EngineError, match=r"frames\[0\] = 0"):
        engine.pixel_rows(targets, 14, 2, 2, np.array([0], dtype=np.int64))
