"""Qwen3-VL videos on the fast path against its processor: frames sampled as its video
processor samples them (fps 2 over a 24 fps default, at least ``min_frames``), frame
timestamps written into the text (``<t seconds>`` before each temporal group), its own
``smart_resize`` and per-frame cap; every key, the ids (timestamps included) and grids
exactly, pixel values bit for bit. With fps budgets (frames sampled by the encode step,
the metadata passed on) the same holds against the processor sampling itself."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import assert_same_batch, assistant, user
from vlm_collate import VLMCollator, qwen2_5_collate_fn
from vlm_collate.pipeline.fast_path import fast_encoding, fast_plan
from vlm_collate.processor.profile import profile_of
from vlm_collate.processor.render import renderer_for
from vlm_collate.testing.families import qwen3_vl_processor

VIDEO = "<|vision_start|><|video_pad|><|vision_end|>"
IMAGE = "<|vision_start|><|image_pad|><|vision_end|>"


@pytest.fixture()
def processor():
    built = qwen3_vl_processor()
    built.video_processor.cap_pixels_per_frame = False  # its default, set: no warning
    return built


def _frames(seed: int, t: int, h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def _call(processor, texts, images, videos, **kwargs) -> dict:
    flat_images = [i for s in images for i in s]
    flat_videos = [v for s in videos for v in s]
    if flat_images:
        kwargs["images"] = flat_images
    if flat_videos:
        kwargs["videos"] = flat_videos
    out = processor(text=texts, padding=True, padding_side="right", return_tensors="pt", **kwargs)
    return dict(out)


@pytest.mark.parametrize("as_frames", [False, True], ids=["arrays", "pil-frames"])
def test_video_encoding_equals_the_processor_call(processor, as_frames):
    # Sampled to 4 (min_frames), 8 and 10 frames, 3 of 3 (odd: the last repeated), and
    # 2 of 2; sizes up- and downscaled; an image and a text-only sample beside them.
    shapes = [(16, 60, 90), (100, 100, 70), (130, 40, 40), (3, 13, 400), (2, 56, 56)]
    clips = [_frames(k, *s) for k, s in enumerate(shapes)]
    if as_frames:
        clips = [[Image.fromarray(f) for f in c] for c in clips]
    videos = [[clips[0]], [], [clips[1], clips[2]], [clips[3], clips[4]]]
    image = Image.fromarray(_frames(9, 1, 50, 70)[0])
    images = [[image], [], [], []]
    texts = [
        IMAGE + VIDEO + "one",
        "text only",
        VIDEO + "a" + VIDEO + "b",
        "first " + VIDEO + " second " + VIDEO,
    ]
    slow = _call(processor, texts, images, videos)
    fast = fast_encoding(processor, texts, images, videos)
    assert fast is not None
    assert_same_batch(fast, slow)
    assert fast["video_grid_thw"][:, 0].tolist() == [2, 4, 5, 2, 1]
    # The timestamps are in the ids: the text the processor wrote.
    decoded = processor.tokenizer.decode(fast["input_ids"][2])
    assert decoded.startswith("<|vision_start|><0.3 seconds>")  # frames 0 and 5 of 24 fps
    assert decoded.count(" seconds>") == 4 + 5  # one per temporal group


def test_frames_taken_as_given_when_sampling_is_off(processor):
    processor.video_processor.do_sample_frames = False
    videos = [[_frames(1, 5, 48, 64)], [_frames(2, 12, 30, 90)]]
    texts = [VIDEO + "x", "y " + VIDEO]
    slow = _call(processor, texts, [[], []], videos)
    fast = fast_encoding(processor, texts, [[], []], videos)
    assert fast is not None
    assert_same_batch(fast, slow)
    assert fast["video_grid_thw"][:, 0].tolist() == [3, 6]


def test_per_frame_cap_is_reproduced(processor):
    vp = processor.video_processor
    vp.cap_pixels_per_frame, vp.max_video_tokens = True, 8  # a cap that binds
    videos = [[_frames(3, 40, 320, 480)], [_frames(4, 2, 200, 200)]]
    texts = [VIDEO + "x", VIDEO + "y"]
    slow = _call(processor, texts, [[], []], videos)
    uncapped = qwen3_vl_processor()
    uncapped.video_processor.cap_pixels_per_frame = False
    assert not torch.equal(
        slow["video_grid_thw"], _call(uncapped, texts, [[], []], videos)["video_grid_thw"]
    )
    fast = fast_encoding(processor, texts, [[], []], videos)
    assert fast is not None
    assert_same_batch(fast, slow)


def test_half_precision_video_pixels_equal_the_cast_processor_output(processor):
    videos = [[_frames(5, 9, 90, 120)]]
    slow = _call(processor, [VIDEO], [[]], videos)
    for dtype in (torch.bfloat16, torch.float16):
        fast = fast_encoding(processor, [VIDEO], [[]], videos, pixel_dtype=dtype)
        assert fast is not None and fast["pixel_values_videos"].dtype == dtype
        assert torch.equal(fast["pixel_values_videos"], slow["pixel_values_videos"].to(dtype))


def _examples() -> list[dict]:
    examples = []
    for i in range(4):
        content = []
        if i != 1:
            video = _frames(10 + i, 20 + 30 * i, 40 + 30 * i, 90 - 10 * i)
            content.append({"type": "video", "video": video, "video_fps": 10.0 + i})
        if i == 2:
            image = Image.fromarray(_frames(20, 1, 64, 48)[0])
            content.append({"type": "image", "image": image})
        content.append(f"What happens in clip {i}?")
        messages = [user(*content), assistant(f"Answer {i}: " + "moving " * (i + 1))]
        if i % 2:
            messages += [user("And then?"), assistant("It stops.")]
        examples.append({"messages": messages})
    return examples


def test_collate_equals_the_processor_path(processor, monkeypatch):
    examples = _examples()
    calls = []
    original = type(processor).__call__
    monkeypatch.setattr(
        type(processor),
        "__call__",
        lambda self, *a, **k: calls.append(1) or original(self, *a, **k),
    )
    fast = qwen2_5_collate_fn(examples, processor, shift=False)
    assert not calls  # the fast path made the batch
    slow = qwen2_5_collate_fn(examples, processor, shift=False, fast_path=False)
    assert calls
    assert_same_batch(dict(fast), dict(slow))
    assert "pixel_values_videos" in fast and "pixel_values" in fast
    assert (fast["labels"] != -100).any()


def test_fps_budgets_equal_the_processor_sampling_itself(processor):
    """Under an fps budget the encode step samples the frames (the video processor's own
    rule) and passes their metadata: the fast path's timestamps and frames equal the
    processor called on the full frames with their rates, sampling them itself."""
    examples = [e for e in _examples() if any(c.get("type") == "video" for c in _content(e))]
    fast = VLMCollator(processor, fps=4.0, shift=False)(examples)
    slow = VLMCollator(processor, fps=4.0, shift=False, fast_path=False)(examples)
    assert_same_batch(dict(fast), dict(slow))
    render = renderer_for(profile_of(processor))
    direct = processor(
        text=[render(e["messages"]) for e in examples],
        images=[c["image"] for e in examples for c in _content(e) if c.get("type") == "image"],
        videos=[c["video"] for e in examples for c in _content(e) if c.get("type") == "video"],
        video_metadata=[
            {"total_num_frames": len(c["video"]), "fps": c["video_fps"]}
            for e in examples
            for c in _content(e)
            if c.get("type") == "video"
        ],
        do_sample_frames=True,
        fps=4.0,
        padding=True,
        padding_side="right",
        add_special_tokens=False,
        return_tensors="pt",
    )
    mask = fast["attention_mask"].bool()
    assert torch.equal(
        fast["input_ids"][mask], direct["input_ids"][direct["attention_mask"].bool()]
    )
    assert torch.equal(fast["video_grid_thw"], direct["video_grid_thw"])
    assert torch.equal(fast["pixel_values_videos"], direct["pixel_values_videos"])


def _content(example: dict) -> list[dict]:
    content = example["messages"][0]["content"]
    return [c for c in content if isinstance(c, dict)]


def test_a_clip_shorter_than_a_temporal_patch_is_left_to_the_processor(processor):
    # One frame: the processor refuses it (its smart_resize needs a temporal patch).
    assert fast_encoding(processor, [VIDEO], [[]], [[_frames(0, 1, 40, 40)]]) is None


def test_replaced_timestamps_fall_back_logged(caplog):
    processor = qwen3_vl_processor()
    processor._calculate_timestamps = lambda *a, **k: [0.0] * 99
    with caplog.at_level(logging.INFO, logger="vlm_collate"):
        plan = fast_plan(processor)
    assert plan is not None and plan.video is None
    logged = [r.getMessage() for r in caplog.records if "fast path off" in r.getMessage()]
    assert any("_calculate_timestamps is replaced" in m for m in logged), logged
