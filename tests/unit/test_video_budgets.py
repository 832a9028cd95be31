"""Video frame budgets (``max_frames``): a video given as frames keeps the frames the video
processor's own sampling keeps, so the processor path, the fast path and the length
estimate give the grids (``video_grid_thw``, ``second_per_grid_ts``) of the processor
called directly with ``do_sample_frames=True, num_frames=...`` on the same frames."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import assistant, user
from vlm_collate import CollateOptions, LengthEstimator, VLMCollator, qwen2_5_collate_fn
from vlm_collate.errors import MediaError, OptionError, SampleError
from vlm_collate.processor.fast_plan import fast_plan
from vlm_collate.processor.profile import profile_of
from vlm_collate.processor.render import renderer_for
from vlm_collate.testing.builders import qwen2_5_vl_processor
from vlm_collate.testing.families import qwen2_vl_processor

FRAMES = [13, 7, 4, 30]  # per sample; 4 is below every budget tested


@pytest.fixture(scope="module", params=["qwen2_vl", "qwen2_5_vl"])
def processor(request):
    built = {"qwen2_vl": qwen2_vl_processor, "qwen2_5_vl": qwen2_5_vl_processor}[request.param]()
    built.video_processor.cap_pixels_per_frame = False  # its default, set: no warning
    return built


def _video(t: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (t, 36 + 4 * seed, 52, 3), dtype=np.uint8)


def rows(as_pil: int | None = None, **item_keys) -> list[dict]:
    out = []
    for i, t in enumerate(FRAMES):
        video = _video(t, i)
        value = [Image.fromarray(f) for f in video] if i == as_pil else video
        item = {"type": "video", "video": value, **item_keys}
        out.append({"messages": [user(item, f"clip {i}?"), assistant(f"It moves {i}.")]})
    return out


def processor_sampling(processor, examples, num_frames):
    """The processor called directly on the same frames, sampling them itself with its
    own ``do_sample_frames``/``num_frames`` keywords (not the library's route)."""
    render = renderer_for(profile_of(processor))
    texts = [render(e["messages"]) for e in examples]
    videos = []
    for e in examples:
        v = e["messages"][0]["content"][0]["video"]
        videos.append(np.stack([np.asarray(f) for f in v]) if isinstance(v, list) else v)
    outputs = []
    for v in videos:  # num_frames only where it samples (the processor refuses n > total)
        kwargs = {"do_sample_frames": True, "num_frames": num_frames} if len(v) > num_frames else {}
        outputs.append(processor.video_processor(videos=[v], return_tensors="pt", **kwargs))
    full = processor(
        text=texts,
        videos=[v[:1] for v in videos],
        padding=True,
        add_special_tokens=False,
        return_tensors="pt",
    )  # second_per_grid_ts as the processor computes it for frames without metadata
    return torch.cat([o["video_grid_thw"] for o in outputs]), full.get("second_per_grid_ts")


@pytest.mark.parametrize("fast", [True, False])
@pytest.mark.parametrize("max_frames", [8, 6, 5])
def test_max_frames_gives_the_processors_grids(processor, fast, max_frames):
    assert fast_plan(processor).video is not None  # the fast path does take these videos
    examples = rows(as_pil=1)
    num_frames = max_frames // 2 * 2  # temporal_patch_size 2: the documented rounding
    expected, seconds = processor_sampling(processor, examples, num_frames)
    default = qwen2_5_collate_fn(examples, processor, shift=False)
    batch = qwen2_5_collate_fn(
        examples, processor, shift=False, fast_path=fast, max_frames=max_frames
    )
    assert torch.equal(batch["video_grid_thw"], expected)
    assert not torch.equal(batch["video_grid_thw"], default["video_grid_thw"])  # took effect
    if seconds is not None:
        assert torch.equal(batch["second_per_grid_ts"], seconds)
    # the video tokens in the batch are the grids' count
    video_id = processor.video_token_id
    counts = (batch["input_ids"] == video_id).sum(dim=1)
    assert counts.tolist() == (expected.prod(dim=1) // 4).tolist()
    # the length estimate agrees with the batch, sample by sample
    estimator = LengthEstimator(processor, options=CollateOptions(max_frames=max_frames))
    lengths = batch["attention_mask"].sum(dim=1).tolist()
    assert [estimator(e, i) for i, e in enumerate(examples)] == lengths


def test_fast_and_processor_paths_agree_on_sampled_pixels(processor):
    examples = rows()
    fast = qwen2_5_collate_fn(examples, processor, shift=False, max_frames=6)
    slow = qwen2_5_collate_fn(examples, processor, shift=False, max_frames=6, fast_path=False)
    for key in ("input_ids", "labels", "video_grid_thw"):
        assert torch.equal(fast[key], slow[key]), key
    assert torch.allclose(fast["pixel_values_videos"], slow["pixel_values_videos"], atol=1e-5)


def test_item_over_row_over_options(processor):
    examples = rows()
    examples[0]["max_frames"] = 4  # the row
    examples[3]["messages"][0]["content"][0]["max_frames"] = 12  # the item, over the row
    examples[3]["max_frames"] = 4
    batch = VLMCollator(processor, max_frames=8)(examples)
    frames = batch["video_grid_thw"][:, 0].tolist()
    assert frames == [2, 4, 2, 6]  # 13->4, 7 kept (<= 8; 4 temporal steps of 2), 4 kept, 30->12


def test_budget_errors(processor):
    with pytest.raises(OptionError, match="max_frames"):
        CollateOptions(max_frames=0)
    bad = rows()
    bad[2]["max_frames"] = "8"
    with pytest.raises(SampleError, match="sample 2: max_frames"):
        VLMCollator(processor)(bad)
    path = rows()
    path[0]["messages"][0]["content"][0]["video"] = __file__
    with pytest.raises(MediaError, match="sample 0, video 0: max_frames=4"):
        VLMCollator(processor, max_frames=4)(path)


def test_image_only_processor_refuses_max_frames():
    from vlm_collate.testing.families import FAMILY_PROCESSORS

    image_only = FAMILY_PROCESSORS["idefics3"]()
    with pytest.raises(OptionError, match="max_frames"):
        VLMCollator(image_only, max_frames=8)([rows()[0]])
