"""GLM-4.1V videos on the fast path against its processor: each temporal group of frames
written into the text as an image block (``<|begin_of_image|>``, its image token,
``<|end_of_image|>``) and the whole second of its first frame, expanded with the images
in text order; GLM's ``smart_resize`` over the frames; ``mm_token_type_ids`` 2 inside the
video. Every key, ids and grids exactly, pixels bit for bit. Frames are taken as given,
as ``glm4v_collate_fn`` calls the processor (``do_sample_frames=False``), with their
metadata where the encode step gives it (fps budgets)."""

from __future__ import annotations

import logging

import numpy as np
import torch
from PIL import Image

from helpers import assert_same_batch, assistant, processor_calls, user
from vlm_collate import VLMCollator
from vlm_collate.pipeline.fast_path import fast_encoding, fast_plan
from vlm_collate.processor.media_tokens import sampled_frames, video_metadata
from vlm_collate.processor.profile import profile_of
from vlm_collate.processor.render import renderer_for
from vlm_collate.testing.families import glm4v_processor

VIDEO = "<|begin_of_video|><|video|><|end_of_video|>"
IMAGE = "<|begin_of_image|><|image|><|end_of_image|>"


def _frames(seed: int, t: int, h: int, w: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


def _image(seed: int, h: int, w: int) -> Image.Image:
    return Image.fromarray(_frames(seed, 1, h, w)[0])


def _batch():
    clips = [_frames(k, *s) for k, s in enumerate([(16, 60, 90), (48, 100, 70), (5, 300, 200),
                                                    (3, 13, 400), (9, 56, 56)])]  # fmt: skip
    videos = [[clips[0]], [], [clips[1], clips[2]], [clips[3], clips[4]]]
    images = [[_image(7, 50, 70)], [], [], [_image(8, 90, 40)]]
    texts = [
        IMAGE + VIDEO + "one",
        "text only",
        VIDEO + "a" + VIDEO + "b",
        "first " + VIDEO + IMAGE + " second " + VIDEO,  # an image between two videos
    ]
    return texts, images, videos


def _call(processor, texts, images, videos, **kwargs) -> dict:
    if any(images):
        kwargs["images"] = [i for s in images for i in s]
    out = processor(
        text=texts,
        videos=[v for s in videos for v in s],
        padding=True,
        padding_side="right",
        return_tensors="pt",
        **kwargs,
    )
    return dict(out)


def test_frames_as_given_equal_the_processor_call():
    processor = glm4v_processor()
    texts, images, videos = _batch()
    slow = _call(processor, texts, images, videos, do_sample_frames=False)
    fast = fast_encoding(processor, texts, images, videos)
    assert fast is not None
    assert_same_batch(fast, slow)
    assert fast["video_grid_thw"][:, 0].tolist() == [8, 24, 3, 2, 5]
    assert (fast["mm_token_type_ids"] == 2).any() and (fast["mm_token_type_ids"] == 1).any()


def test_frames_with_metadata_equal_the_processor_call():
    """As the encode step calls it under fps budgets: frames sampled, their metadata
    (source rate and the kept indices) given, ``do_sample_frames=False``."""
    processor = glm4v_processor()
    texts, images, videos = _batch()
    flat = [v for s in videos for v in s]
    metadata = [
        {"total_num_frames": 2 * len(v), "fps": 10.0 + k, "frames_indices": list(range(0, 2 * len(v), 2))}  # noqa: E501
        for k, v in enumerate(flat)
    ]  # fmt: skip
    slow = _call(processor, texts, images, videos, video_metadata=metadata, do_sample_frames=False)
    nested = [[metadata[0]], [], metadata[1:3], metadata[3:5]]
    fast = fast_encoding(processor, texts, images, videos, video_metadata=nested)
    assert fast is not None
    assert_same_batch(fast, slow)
    seconds = processor.tokenizer.decode(fast["input_ids"][2])
    assert "<|end_of_image|>1<|begin_of_image|>" in seconds  # whole seconds of the frames


def _examples() -> list[dict]:
    examples = []
    for i in range(3):
        content = [{"type": "video", "video": _frames(20 + i, 12 + 9 * i, 40 + 20 * i, 64)}]
        if i == 1:
            content.append({"type": "image", "image": _image(30, 64, 48)})
        content.append(f"What happens in clip {i}?")
        messages = [user(*content), assistant(f"Answer {i}: it moves.")]
        if i == 2:
            messages += [user("And then?"), assistant("It stops.")]
        examples.append({"messages": messages})
    return examples


def test_collate_equals_the_processor_path(monkeypatch):
    processor = glm4v_processor()
    examples = _examples()
    calls = processor_calls(monkeypatch, processor)
    fast = VLMCollator(processor, shift=False)(examples)
    assert not calls  # the fast path made the batch
    slow = VLMCollator(processor, shift=False, fast_path=False)(examples)
    assert calls
    assert_same_batch(dict(fast), dict(slow))
    assert "pixel_values_videos" in fast and (fast["labels"] != -100).any()


def test_fps_budgets_equal_the_processor_on_the_sampled_frames():
    """Under an fps budget the encode step samples the frames and passes their metadata:
    the fast path equals the processor given those frames and that metadata."""
    processor = glm4v_processor()
    examples = _examples()
    for k, e in enumerate(examples):
        e["messages"][0]["content"][0]["video_fps"] = 6.0 + 2 * k
    fast = VLMCollator(processor, fps=2.0, shift=False)(examples)
    profile = profile_of(processor)
    videos, metadata = [], []
    for e in examples:
        item = e["messages"][0]["content"][0]
        kept = sampled_frames(profile, len(item["video"]), None, 2.0, item["video_fps"])
        videos.append(item["video"][np.asarray(kept)])
        metadata.append(video_metadata(len(item["video"]), item["video_fps"], kept))
    render = renderer_for(profile)
    direct = processor(
        text=[render(e["messages"]) for e in examples],
        images=[examples[1]["messages"][0]["content"][1]["image"]],
        videos=videos,
        video_metadata=metadata,
        do_sample_frames=False,
        padding=True,
        padding_side="right",
        add_special_tokens=False,
        return_tensors="pt",
    )
    for row in range(len(examples)):  # the processor's ids, then the closing token appended
        ours = fast["input_ids"][row][fast["attention_mask"][row].bool()]
        theirs = direct["input_ids"][row][direct["attention_mask"][row].bool()]
        assert torch.equal(ours[: len(theirs)], theirs) and len(ours) - len(theirs) <= 1
    assert torch.equal(fast["video_grid_thw"], direct["video_grid_thw"])
    assert torch.equal(fast["pixel_values_videos"], direct["pixel_values_videos"])


def test_half_precision_video_pixels_equal_the_cast_processor_output():
    processor = glm4v_processor()
    videos = [[_frames(5, 6, 90, 120)]]
    slow = _call(processor, [VIDEO], [[]], videos, do_sample_frames=False)
    for dtype in (torch.bfloat16, torch.float16):
        fast = fast_encoding(processor, [VIDEO], [[]], videos, pixel_dtype=dtype)
        assert fast is not None
        assert torch.equal(fast["pixel_values_videos"], slow["pixel_values_videos"].to(dtype))


def test_a_replaced_frame_block_falls_back_logged(caplog):
    processor = glm4v_processor()
    processor.replace_frame_token_id = lambda t, num_image_tokens=1: "x"
    with caplog.at_level(logging.INFO, logger="vlm_collate"):
        plan = fast_plan(processor)
    assert plan is not None and plan.video is None
    logged = [r.getMessage() for r in caplog.records if "fast path off" in r.getMessage()]
    assert any("replace_frame_token_id is replaced" in m for m in logged), logged


def test_fps_budgets_on_the_processor_path_equal_the_fast_path():
    """fast_path=False under an fps budget calls the processor once with the sampled
    frames' metadata (do_sample_frames given once, not also by the family's keywords)."""
    processor = glm4v_processor()
    examples = _examples()
    for k, e in enumerate(examples):
        e["messages"][0]["content"][0]["video_fps"] = 6.0 + 2 * k
    fast = VLMCollator(processor, fps=2.0, shift=False)(examples)
    slow = VLMCollator(processor, fps=2.0, shift=False, fast_path=False)(examples)
    assert_same_batch(dict(fast), dict(slow))
