"""qwen3_omni_collate_fn on a real Qwen3OmniMoeProcessor (real Qwen2 vocabulary, Whisper
features from generated waveforms, generated images and video frames)."""

from __future__ import annotations

import pytest
import torch

from family_checks import (
    IGNORE,
    assert_exact_labels,
    assistant,
    label_cases,
    make_image,
    token_count,
    user,
)
from vlm_collate import qwen3_omni_collate_fn
from vlm_collate.testing import qwen3_omni_processor, video, waveform

# transformers passes tensors to np.arange when interleaving audio into video.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def processor():
    return qwen3_omni_processor()


@pytest.fixture(scope="module")
def ids(processor) -> dict[str, int]:
    tok = processor.tokenizer
    names = ("image", "video", "audio", "vision_bos", "vision_eos", "audio_bos", "audio_eos")
    return {name: getattr(tok, f"{name}_token_id") for name in names}


def audio_data(k: int, seconds: float = 1.0) -> dict:
    return {"array": waveform(seconds, seed=k), "sampling_rate": 16_000}


def media(k: int) -> dict:
    """0: an audio, 1: a video (with its audio track), 2 and 3: images."""
    if k == 0:
        return {"type": "audio", "audio": audio_data(k)}
    if k == 1:
        return {"type": "video", "video": video(seed=k), "audio": audio_data(k, 2.0)}
    return {"type": "image", "image": make_image(48 + 16 * k, 40, seed=k)}


@pytest.fixture(scope="module")
def cases() -> list[list[dict]]:
    return label_cases(media)


def collate(processor, conversations, **options):
    return qwen3_omni_collate_fn([{"conversation": c} for c in conversations], processor, **options)


@pytest.fixture(scope="module")
def unshifted(processor, cases):
    return collate(processor, cases, shift=False)


def test_ids_are_the_released_ones(ids):
    assert (ids["audio_bos"], ids["audio_eos"], ids["audio"]) == (151669, 151670, 151675)


def test_labels_match_offset_ground_truth(processor, cases, unshifted, ids):
    pads = {ids["image"], ids["video"], ids["audio"]}
    assert_exact_labels(unshifted, processor, cases, expanded=pads, never_target=set(ids.values()))


def test_right_padding_is_pinned(processor, unshifted):
    assert processor.text_kwargs["padding_side"] == "left"  # the processor's own default
    mask = unshifted["attention_mask"]
    assert (mask[:, 0] == 1).all()
    assert (mask[:, 1:] <= mask[:, :-1]).all()


def test_keys_shapes_dtypes(unshifted, cases):
    assert set(unshifted) == {
        "input_ids",
        "attention_mask",
        "labels",
        "pixel_values",
        "image_grid_thw",
        "pixel_values_videos",
        "video_grid_thw",
        "video_second_per_grid",
        "input_features",
        "feature_attention_mask",
        "n_images_per_sample",
        "n_videos_per_sample",
        "n_audios_per_sample",
    }
    assert unshifted["image_grid_thw"].shape == (2, 3)
    assert unshifted["video_grid_thw"].shape == (1, 3)
    assert unshifted["input_features"].shape[:2] == (1, 128)  # the video's audio is not used
    assert unshifted["n_images_per_sample"].tolist() == [0, 0, 0, 0, 0, 2]
    assert unshifted["n_videos_per_sample"].tolist() == [0, 0, 1, 0, 0, 0]
    assert unshifted["n_audios_per_sample"].tolist() == [1, 0, 0, 0, 0, 0]
    for key in ("input_ids", "attention_mask", "labels"):
        assert unshifted[key].dtype == torch.int64 and unshifted[key].shape[0] == len(cases)


def test_media_tokens_match_grids_and_features(processor, unshifted, ids):
    per_image = (unshifted["image_grid_thw"].prod(-1) // 4).tolist()
    per_video = (unshifted["video_grid_thw"].prod(-1) // 4).tolist()
    assert token_count(unshifted, ids["image"]) == [0, 0, 0, 0, 0, sum(per_image)]
    assert token_count(unshifted, ids["video"]) == [0, 0, per_video[0], 0, 0, 0]
    frames = (
        int(unshifted["feature_attention_mask"][0].sum()) * processor.feature_extractor.hop_length
    )
    audio = processor._get_num_multimodal_tokens(audio_lengths=[frames])["num_audio_tokens"][0]
    assert token_count(unshifted, ids["audio"]) == [audio, 0, 0, 0, 0, 0]


def test_use_audio_in_video_reaches_the_processor(processor, ids):
    conversation = [user(media(1), "What happens?"), assistant("A dog barks.")]
    without = collate(processor, [conversation], shift=False)
    with_audio = collate(processor, [conversation], shift=False, use_audio_in_video=True)
    assert token_count(without, ids["audio"]) == [0] and "input_features" not in without
    row = with_audio["input_ids"][0].tolist()
    start, end = row.index(ids["audio_bos"]), row.index(ids["audio_eos"])
    assert row[start - 1] == ids["vision_bos"] and row[end + 1] == ids["vision_eos"]
    inside = set(row[start + 1 : end])
    assert inside == {ids["video"], ids["audio"]}  # interleaved video and audio tokens
    assert with_audio["input_features"].shape[0] == 1
    assert token_count(with_audio, ids["video"]) == token_count(without, ids["video"])
    for batch in (without, with_audio):
        targets = batch["labels"][0][batch["labels"][0] != IGNORE]
        assert processor.tokenizer.decode(targets) == "A dog barks.<|im_end|>"


def test_use_audio_in_video_with_a_standalone_audio(processor, ids):
    conversation = [user(media(0), media(1), "Both?"), assistant("Yes.")]
    batch = collate(
        processor, [conversation, [user("hi"), assistant("yo")]], use_audio_in_video=True
    )
    assert batch["input_features"].shape[0] == 2
    assert batch["n_audios_per_sample"].tolist() == [1, 0]


def test_use_audio_in_video_needs_the_audio_track(processor):
    silent = {"type": "video", "video": video()}
    conversation = [user(silent, "What?"), assistant("x")]
    assert "pixel_values_videos" in collate(processor, [conversation])
    with pytest.raises(ValueError, match="sample 0, video 0: use_audio_in_video=True needs"):
        collate(processor, [conversation], use_audio_in_video=True)


def test_max_length_never_cuts_media(processor, ids):
    long_reply = [user(media(2), "Describe."), assistant("word " * 40)]
    image_late = [user("word " * 40, media(3)), assistant("ok")]
    short = [user("hi"), assistant("yo")]
    with pytest.raises(ValueError, match="sample 0 has .* more than max_length=32"):
        collate(processor, [long_reply, short], max_length=32)
    batch = collate(processor, [long_reply, short], max_length=32, on_overflow="truncate")
    assert batch["input_ids"].shape == (2, 31) and batch.report.truncated == [0]
    assert token_count(batch, ids["image"])[0] == int(batch["image_grid_thw"].prod() // 4)
    batch = collate(processor, [image_late, short], max_length=32, on_overflow="drop")
    assert [i for i, _ in batch.report.dropped] == [0] and "pixel_values" not in batch
