"""Video ``fps`` budgets: a video given as frames with its source rate (``video_fps`` or
``metadata``) keeps the frames the video processor's own ``sample_frames(metadata,
fps=...)`` keeps, and ``second_per_grid_ts`` is computed from that metadata, so the
processor path, the fast path and the length estimate equal the processor called directly
with ``do_sample_frames=True, fps=..., video_metadata=...`` on the full frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import assistant, user
from vlm_collate import CollateOptions, LengthEstimator, VLMCollator, qwen2_5_collate_fn
from vlm_collate.errors import MediaError, OptionError, SampleError
from vlm_collate.processor.fast_plan import fast_plan
from vlm_collate.processor.profile import profile_of
from vlm_collate.processor.render import renderer_for
from vlm_collate.testing.builders import qwen2_5_vl_processor
from vlm_collate.testing.families import qwen2_vl_processor

# (frames, source fps, how the rate is given) per sample
VIDEOS = [
    (30, 10.0, "video_fps"),
    (13, 6.0, "metadata"),
    (7, 3.0, "duration"),
    (4, 1.0, "video_fps"),
]


@pytest.fixture(scope="module", params=["qwen2_vl", "qwen2_5_vl"])
def processor(request):
    built = {"qwen2_vl": qwen2_vl_processor, "qwen2_5_vl": qwen2_5_vl_processor}[request.param]()
    built.video_processor.cap_pixels_per_frame = False  # its default, set: no warning
    return built


def _video(t: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (t, 36 + 4 * seed, 52, 3), dtype=np.uint8)


def _rate_keys(t: int, fps: float, how: str) -> dict:
    if how == "video_fps":
        return {"video_fps": fps}
    if how == "metadata":
        return {"metadata": {"fps": fps, "total_num_frames": t}}
    return {"metadata": {"total_num_frames": t, "duration": t / fps}}


def rows(**item_keys) -> list[dict]:
    out = []
    for i, (t, fps, how) in enumerate(VIDEOS):
        item = {"type": "video", "video": _video(t, i), **_rate_keys(t, fps, how), **item_keys}
        out.append({"messages": [user(item, f"clip {i}?"), assistant(f"It moves {i}.")]})
    return out


def processor_sampling(processor, examples, fps):
    """The processor called directly on the full frames with their metadata, sampling
    them itself (``do_sample_frames=True, fps=...``): not the library's route."""
    render = renderer_for(profile_of(processor))
    texts = [render(e["messages"]) for e in examples]
    videos = [e["messages"][0]["content"][0]["video"] for e in examples]
    metadata = [{"total_num_frames": t, "fps": f} for t, f, _ in VIDEOS]
    return processor(
        text=texts,
        videos=videos,
        video_metadata=metadata,
        do_sample_frames=True,
        fps=fps,
        padding=True,
        padding_side="right",
        add_special_tokens=False,
        return_tensors="pt",
    )


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("fps", [2.0, 1.0])
def test_fps_gives_the_processors_batch(processor, fast, fps):
    assert fast_plan(processor).video is not None  # the fast path does take these videos
    examples = rows()
    expected = processor_sampling(processor, examples, fps)
    default = qwen2_5_collate_fn(examples, processor, shift=False)
    batch = qwen2_5_collate_fn(examples, processor, shift=False, fast_path=fast, fps=fps)
    assert torch.equal(batch["video_grid_thw"], expected["video_grid_thw"])
    assert not torch.equal(batch["video_grid_thw"], default["video_grid_thw"])  # took effect
    assert torch.equal(batch["input_ids"], expected["input_ids"])
    assert torch.allclose(batch["pixel_values_videos"], expected["pixel_values_videos"], atol=1e-5)
    if "second_per_grid_ts" in expected:  # Qwen2.5-VL: from the metadata, not the default 24
        assert torch.allclose(
            batch["second_per_grid_ts"], torch.as_tensor(expected["second_per_grid_ts"])
        )
        assert not torch.allclose(batch["second_per_grid_ts"], default["second_per_grid_ts"])
    # the length estimate agrees with the batch, sample by sample
    estimator = LengthEstimator(processor, options=CollateOptions(fps=fps))
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    assert [estimator(e, i) for i, e in enumerate(examples)] == lengths


def test_item_over_row_over_options(processor):
    examples = rows()
    examples[0]["fps"] = 1.0  # the row: 30 frames at 10 fps -> 3 s -> min_frames 4
    examples[1]["messages"][0]["content"][0]["fps"] = 6.0  # the item: every frame, 13 -> 12
    examples[1]["fps"] = 0.5
    batch = VLMCollator(processor, fps=2.0)(examples)
    frames = batch["video_grid_thw"][:, 0].tolist()
    assert frames == [2, 6, 2, 2]  # 30->4, 13->12, 7->4, 4->4 (its own min_frames)


def test_max_frames_caps_fps_as_the_processor_does(processor):
    examples = rows()
    expected = processor.video_processor(
        videos=[examples[0]["messages"][0]["content"][0]["video"]],
        video_metadata=[{"total_num_frames": 30, "fps": 10.0}],
        do_sample_frames=True,
        fps=5.0,
        max_frames=8,
        return_tensors="pt",
    )["video_grid_thw"]
    batch = VLMCollator(processor, fps=5.0, max_frames=8)(examples[:1])
    assert batch["video_grid_thw"].tolist() == expected.tolist() == [[4, 4, 6]]


def test_unknown_source_rate_is_an_error(processor):
    examples = rows()
    del examples[2]["messages"][0]["content"][0]["metadata"]
    with pytest.raises(
        SampleError, match="sample 2, video 0: fps=2.0 .* give the video item's video_fps"
    ):
        VLMCollator(processor, fps=2.0)(examples)
    with pytest.raises(SampleError, match="sample 2, video 0: fps=2.0"):
        LengthEstimator(processor, options=CollateOptions(fps=2.0))(examples[2], 2)
    examples[2]["fps"] = 2.0  # a row's budget is no different
    with pytest.raises(SampleError, match="sample 2, video 0: fps=2.0"):
        VLMCollator(processor)(examples)
    # without an fps budget the rate is not needed
    assert VLMCollator(processor)(rows()[2:3])["video_grid_thw"][0, 0] == 4


def test_budget_errors(processor):
    for bad in (0, -1.0, float("nan"), "2", True):
        with pytest.raises(OptionError, match="fps"):
            CollateOptions(fps=bad)
    examples = rows()
    examples[3]["messages"][0]["content"][0]["video_fps"] = "30"
    with pytest.raises(SampleError, match="sample 3, video 0: video_fps"):
        VLMCollator(processor, fps=2.0)(examples)
    path = rows()
    path[0]["messages"][0]["content"][0]["video"] = __file__
    with pytest.raises(MediaError, match="sample 0, video 0: fps=2.0"):
        VLMCollator(processor, fps=2.0)(path)


def test_image_only_processor_refuses_fps():
    from vlm_collate.testing.families import FAMILY_PROCESSORS

    image_only = FAMILY_PROCESSORS["idefics3"]()
    with pytest.raises(OptionError, match="fps"):
        VLMCollator(image_only, fps=2.0)([rows()[0]])
