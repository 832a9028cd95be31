"""Rotary positions without the model equal transformers' own ``get_rope_index``: tiny
Qwen2-VL and Qwen2.5-VL models built offline from a config (random weights), transformers'
Qwen3-VL and Qwen3-Omni ``get_rope_index`` on config values, padded and packed batches."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from transformers import (
    Qwen2_5_VLConfig,
    Qwen2_5_VLModel,
    Qwen2VLConfig,
    Qwen2VLModel,
    Qwen3VLConfig,
    Qwen3VLModel,
)
from transformers.models.qwen3_omni_moe import modeling_qwen3_omni_moe as omni

from helpers import image_item as image
from helpers import one_turn as conversation
from vlm_collate import VLMCollator
from vlm_collate.errors import OptionError
from vlm_collate.packing import PackedCollator
from vlm_collate.packing.positions import (
    RopeConfig,
    batch_rope_position_ids,
    ragged_rope_positions,
    rope_position_ids,
)
from vlm_collate.testing import video
from vlm_collate.testing.tiny_models import tiny_qwen_vl_config

TINY = tiny_qwen_vl_config()


@pytest.fixture(scope="module")
def models():
    """Tiny Qwen2-VL and Qwen2.5-VL models (random weights, no download)."""
    torch.manual_seed(0)
    qwen2_5 = Qwen2_5_VLConfig(
        **{**TINY, "vision_config": {**TINY["vision_config"], "tokens_per_second": 3}}
    )
    return {
        "qwen2_vl": Qwen2VLModel(Qwen2VLConfig(**TINY)).eval(),
        "qwen2_5_vl": Qwen2_5_VLModel(qwen2_5).eval(),
    }


def clip(frames, h, w, seed=0):
    return {"type": "video", "video": video(frames, h, w, seed)}


def text(t):
    return {"type": "text", "text": t}


SAMPLES = {
    "images": [
        conversation(image(100, 60), text("what is here?"), image(60, 200, 1)),
        conversation(text("and this one"), image(224, 224, 2), reply="A square."),
    ],
    "videos": [
        conversation(clip(4, 64, 96), text("what happens?")),
        conversation(clip(6, 96, 64, 1), text("and here?"), clip(2, 56, 56, 2)),
    ],
    "mixed": [
        conversation(image(80, 120), text("compare with"), clip(4, 64, 64)),
        conversation(text("only words here, nothing else")),
        conversation(clip(2, 64, 128, 3), image(300, 100, 4)),
    ],
    "text": [conversation(text("hello")), conversation(text("a longer question, " * 5))],
}


def reference(model, batch, seconds=None):
    """transformers' own positions for a padded batch."""
    kwargs = dict(
        image_grid_thw=batch.get("image_grid_thw"),
        video_grid_thw=batch.get("video_grid_thw"),
        attention_mask=batch["attention_mask"],
        mm_token_type_ids=batch["mm_token_type_ids"],
    )
    if isinstance(model, Qwen2_5_VLModel):
        kwargs["second_per_grid_ts"] = seconds
    positions, _ = model.get_rope_index(batch["input_ids"], **kwargs)
    return positions


def with_seconds(batch):
    """Spreads the videos' frames in time (the processor assumes 24 fps: all 0 otherwise)."""
    if batch.get("video_grid_thw") is not None:
        n = len(batch["video_grid_thw"])
        batch["second_per_grid_ts"] = torch.tensor([1.5, 0.75, 2.0, 1 / 3][:n])
    return batch


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
@pytest.mark.parametrize("kind", list(SAMPLES))
def test_padded_positions_equal_get_rope_index(qwen_processor, models, family, kind):
    model = models[family]
    batch = with_seconds(VLMCollator(qwen_processor, shift=False)(SAMPLES[kind]))
    rope = RopeConfig.from_model_config(model.config)
    ours = batch_rope_position_ids(batch, rope, text_row=False)
    expected = reference(model, batch, batch.get("second_per_grid_ts"))
    assert ours.dtype == expected.dtype == torch.int64
    assert torch.equal(ours, expected)
    with_text = batch_rope_position_ids(batch, rope)
    assert with_text.shape == (4, *batch["input_ids"].shape)
    assert torch.equal(with_text[1:], expected)
    mask = batch["attention_mask"].bool()
    assert torch.equal(with_text[0][mask], torch.cat([torch.arange(int(n)) for n in mask.sum(1)]))


def test_video_frames_are_spread_in_time_for_qwen2_5(qwen_processor, models):
    """A check that the fixture exercises the temporal spacing at all."""
    batch = with_seconds(VLMCollator(qwen_processor, shift=False)(SAMPLES["videos"][:1]))
    positions = reference(models["qwen2_5_vl"], batch, batch["second_per_grid_ts"])
    video_tokens = batch["input_ids"][0] == qwen_processor.video_token_id
    temporal = positions[0, 0][video_tokens].unique()
    assert len(temporal) == 2 and int(temporal[1] - temporal[0]) == int(3 * 1.5)


@pytest.mark.parametrize("family", ["qwen2_vl", "qwen2_5_vl"])
@pytest.mark.parametrize("shift", [False, True])
def test_packed_positions_equal_each_document_alone(qwen_processor, models, family, shift):
    model = models[family]
    samples = SAMPLES["mixed"] + SAMPLES["images"] + SAMPLES["text"]
    collator = PackedCollator(
        VLMCollator(qwen_processor), max_length=400, rope=model.config, shift=shift
    )
    batch = collator(samples)
    assert batch["position_ids"].shape == (4, *batch["input_ids"].shape)
    assert "attention_mask" not in batch
    single = VLMCollator(qwen_processor, shift=False)
    for index, row, start, n in batch.report.documents:
        alone = single([samples[index]])
        expected = reference(model, alone, alone.get("second_per_grid_ts"))[:, 0, :n]
        got = batch["position_ids"][:, row, start : start + n]
        assert torch.equal(got[1:], expected), (index, row, start)
        assert torch.equal(got[0], torch.arange(n))
    # Padding is its own run from 0, so transformers sees it as one more sequence.
    ends = {(row, start + n) for _, row, start, n in batch.report.documents}
    width = batch["input_ids"].shape[1]
    for row, end in ends:
        if end < width and all(e <= end for r, e in ends if r == row):
            assert torch.equal(
                batch["position_ids"][:, row, end:], torch.arange(width - end).expand(4, -1)
            )


def test_rope_config_from_processor_matches_model_config(qwen_processor, models):
    from_processor = RopeConfig.from_processor(qwen_processor, tokens_per_second=3)
    assert from_processor == RopeConfig.from_model_config(models["qwen2_5_vl"].config)
    with pytest.raises(OptionError, match="family"):
        RopeConfig.from_processor(object())


def test_mismatched_grids_are_clear_errors(qwen_processor):
    batch = VLMCollator(qwen_processor, shift=False)(SAMPLES["images"])
    rope = RopeConfig.from_processor(qwen_processor)
    with pytest.raises(ValueError, match="image block at column .* has .* tokens"):
        rope_position_ids(
            batch["input_ids"], rope, batch["attention_mask"], batch["image_grid_thw"].flip(0)
        )
    with pytest.raises(ValueError, match="no grid"):
        rope_position_ids(
            batch["input_ids"], rope, batch["attention_mask"], batch["image_grid_thw"][:2]
        )
    with pytest.raises(ValueError, match="holds 4 images"):
        grids = torch.cat([batch["image_grid_thw"], batch["image_grid_thw"][:1]])
        rope_position_ids(batch["input_ids"], rope, batch["attention_mask"], grids)


# --------------------------------------------------------------------------- Qwen3-VL

VS, VE, IMG, VID = 151652, 151653, 151655, 151656


def qwen3_vl_rows(rng):
    """Token rows shaped like Qwen3-VL's: each video frame its own block after a
    timestamp; images as in Qwen2-VL. Returns rows, image grids, video grids."""
    rows, images, videos = [], [], []
    for _ in range(4):
        row = list(rng.integers(10, 1000, size=rng.integers(1, 6)))
        for _ in range(rng.integers(0, 3)):
            t, h, w = (
                int(rng.integers(1, 4)),
                2 * int(rng.integers(1, 4)),
                2 * int(rng.integers(1, 4)),
            )
            if rng.random() < 0.5:
                images.append((1, h, w))
                row += [VS] + [IMG] * (h * w // 4) + [VE]
            else:
                videos.append((t, h, w))
                for _ in range(t):
                    row += [int(rng.integers(10, 1000)), VS] + [VID] * (h * w // 4) + [VE]
            row += list(rng.integers(10, 1000, size=rng.integers(0, 4)))
        rows.append(row)
    return rows, images, videos


@pytest.mark.parametrize("seed", range(5))
def test_qwen3_vl_positions_equal_get_rope_index(seed):
    rng = np.random.default_rng(seed)
    rows, images, videos = qwen3_vl_rows(rng)
    width = max(map(len, rows)) + 2
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, row in enumerate(rows):
        ids[r, : len(row)] = torch.tensor(row)
        mask[r, : len(row)] = 1
    types_ = (ids == IMG).long() + 2 * (ids == VID).long()
    config = Qwen3VLConfig()
    owner = types.SimpleNamespace(config=config)
    owner.get_vision_position_ids = types.MethodType(Qwen3VLModel.get_vision_position_ids, owner)
    image_grid = torch.tensor(images).reshape(-1, 3) if images else None
    video_grid = torch.tensor(videos).reshape(-1, 3) if videos else None
    expected, _ = Qwen3VLModel.get_rope_index(
        owner, ids, types_, image_grid, None if video_grid is None else video_grid.clone(), mask
    )
    rope = RopeConfig.from_model_config(config)
    ours = rope_position_ids(ids, rope, mask, image_grid, video_grid, text_row=False)
    assert torch.equal(ours, expected)


# --------------------------------------------------------------------------- Qwen3-Omni

AS, AE, AUD = 151669, 151670, 151675


def omni_owner(per_second: int):
    """What Qwen3-Omni's get_rope_index reads from its model: config values only."""
    config = types.SimpleNamespace(
        image_token_id=IMG,
        video_token_id=VID,
        audio_token_id=AUD,
        vision_start_token_id=VS,
        audio_start_token_id=AS,
        position_id_per_seconds=per_second,
        audio_config=types.SimpleNamespace(n_window=50),
    )
    owner = types.SimpleNamespace(config=config, spatial_merge_size=2)
    cls = omni.Qwen3OmniMoePreTrainedModelForConditionalGeneration
    owner.get_llm_pos_ids_for_vision = types.MethodType(cls.get_llm_pos_ids_for_vision, owner)
    return owner, cls


def feature_length_for(tokens: int) -> int:
    """An audio feature length whose encoder output is ``tokens`` long."""
    n = 1
    while int(omni._get_feat_extract_output_lengths(torch.tensor(n), 50)) != tokens:
        n += 1
    return n


def omni_rows(rng, in_video: bool):
    rows, images, videos, seconds, audio_lengths = [], [], [], [], []
    for _ in range(3):
        row = list(rng.integers(10, 1000, size=rng.integers(1, 5)))
        for _ in range(rng.integers(1, 4)):
            kind = rng.choice(["image", "video", "audio"])
            h, w = 2 * int(rng.integers(1, 4)), 2 * int(rng.integers(1, 4))
            if kind == "image":
                images.append((1, h, w))
                row += [VS] + [IMG] * (h * w // 4) + [VE]
            elif kind == "audio":
                n = int(rng.integers(1, 8))
                audio_lengths.append(feature_length_for(n))
                row += [AS] + [AUD] * n + [AE]
            else:
                t = int(rng.integers(1, 4))
                sec = float(rng.choice([0.5, 1.0, 2 / 3, 1.25]))
                videos.append((t, h, w))
                seconds.append(sec)
                frame = h * w // 4
                if in_video:
                    n = int(rng.integers(1, 10))
                    audio_lengths.append(feature_length_for(n))
                    # The processor's interleaving: frames and audio by time (layout only
                    # has to hold the right counts; positions come from the order rules).
                    body = [VID] * (t * frame) + [AUD] * n
                    row += [VS, AS] + body + [AE, VE]
                else:
                    row += [VS] + [VID] * (t * frame) + [VE]
            row += list(rng.integers(10, 1000, size=rng.integers(0, 3)))
        rows.append(row)
    return rows, images, videos, seconds, audio_lengths


@pytest.mark.parametrize("in_video", [False, True])
@pytest.mark.parametrize("seed", range(4))
def test_qwen3_omni_positions_equal_get_rope_index(seed, in_video):
    rng = np.random.default_rng(seed)
    rows, images, videos, seconds, audio_lengths = omni_rows(rng, in_video)
    if not images and not videos:
        pytest.skip("this seed drew no vision item")  # get_rope_index needs one
    width = max(map(len, rows)) + 3
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, row in enumerate(rows):
        ids[r, : len(row)] = torch.tensor(row)
        mask[r, : len(row)] = 1
    owner, cls = omni_owner(per_second=13)
    image_grid = torch.tensor(images).reshape(-1, 3) if images else None
    video_grid = torch.tensor(videos).reshape(-1, 3) if videos else None
    expected, _ = cls.get_rope_index(
        owner,
        ids,
        image_grid,
        video_grid,
        mask,
        in_video,
        torch.tensor(audio_lengths) if audio_lengths else None,
        torch.tensor(seconds) if seconds else None,
    )
    rope = RopeConfig(
        "qwen3_omni",
        2,
        IMG,
        VID,
        VS,
        tokens_per_second=13,
        audio_token_id=AUD,
        audio_start_token_id=AS,
    )
    ours = rope_position_ids(
        ids,
        rope,
        mask,
        image_grid,
        video_grid,
        torch.tensor(seconds) if seconds else None,
        use_audio_in_video=in_video,
        text_row=False,
    )
    assert ours.dtype == expected.dtype == torch.float32
    attended = mask.bool()
    assert torch.equal(ours[:, attended], expected[:, attended])


def test_ragged_positions_restart_per_row():
    rope = RopeConfig("qwen2_vl", 2, IMG, VID, VS)
    values = np.array([5, VS, IMG, VE, 6, 7, VS, IMG, VE], dtype=np.int64)
    offsets = np.array([0, 4, 9], dtype=np.int64)
    grids = np.array([[1, 2, 2], [1, 2, 2]])
    positions = ragged_rope_positions(values, offsets, rope, grids)
    assert positions[0].tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 4]
