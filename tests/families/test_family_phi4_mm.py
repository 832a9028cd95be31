"""phi4_mm_collate_fn on transformers' native Phi4MultimodalProcessor (generated waveforms)."""

from __future__ import annotations

import pytest
import torch

from family_checks import (
    IGNORE,
    assert_exact_labels,
    assert_shift_consistent,
    assistant,
    label_cases,
    make_image,
    token_count,
    user,
)
from vlm_collate import phi4_mm_collate_fn
from vlm_collate.testing import phi4_multimodal_processor, waveform

AUDIO = {"type": "audio"}  # a placeholder: the data is in example["audio"]


@pytest.fixture(scope="module")
def processor():
    return phi4_multimodal_processor()


@pytest.fixture(scope="module")
def audio_id(processor) -> int:
    return processor.tokenizer.audio_token_id


def audio_data(k: int, seconds: float = 1.0) -> dict:
    return {"array": waveform(seconds + 0.25 * k, seed=k), "sampling_rate": 16_000}


def example(conversation: list[dict], **extra) -> dict:
    """An example with one waveform per audio placeholder of its conversation."""
    n = sum(
        1
        for m in conversation
        if not isinstance(m["content"], str)
        for item in m["content"]
        if item["type"] == "audio"
    )
    audio = [audio_data(k) for k in range(n)]
    if n == 1:
        audio = audio[0]
    return {"conversation": conversation, **({"audio": audio} if n else {}), **extra}


@pytest.fixture(scope="module")
def cases() -> list[list[dict]]:
    return label_cases(lambda k: AUDIO)


@pytest.fixture(scope="module")
def unshifted(processor, cases):
    return phi4_mm_collate_fn([example(c) for c in cases], processor, shift=False)


def test_labels_match_offset_ground_truth(processor, cases, unshifted, audio_id):
    assert_exact_labels(unshifted, processor, cases, expanded={audio_id})


def test_keys_shapes_dtypes(unshifted, cases):
    assert set(unshifted) == {
        "input_ids",
        "attention_mask",
        "labels",
        "audio_input_features",
        "audio_embed_sizes",
        "audio_attention_mask",
        "n_audios_per_sample",
    }
    n_audio = 4
    assert unshifted["audio_input_features"].shape[::2] == (n_audio, 80)
    assert unshifted["audio_attention_mask"].shape == unshifted["audio_input_features"].shape[:2]
    assert unshifted["audio_embed_sizes"].shape == (n_audio,)
    assert unshifted["n_audios_per_sample"].tolist() == [1, 0, 1, 0, 0, 2]
    for key in ("input_ids", "attention_mask", "labels"):
        assert unshifted[key].dtype == torch.int64 and unshifted[key].shape[0] == len(cases)


def test_audio_tokens_match_embed_sizes(unshifted, audio_id):
    sizes = unshifted["audio_embed_sizes"].tolist()
    assert token_count(unshifted, audio_id) == [sizes[0], 0, sizes[1], 0, 0, sizes[2] + sizes[3]]


def test_labels_shifted_like_every_other_function(processor, cases, unshifted):
    shifted = phi4_mm_collate_fn([example(c) for c in cases], processor)
    assert shifted["labels"].shape == shifted["input_ids"].shape
    assert_shift_consistent(shifted, unshifted)


def test_audio_forms_and_remote_placeholders(processor, audio_id):
    wave = waveform(1.0)
    forms = [
        {"audio": {"array": wave, "sampling_rate": 16_000}},
        {"audio": (wave, 16_000)},
        {"audio": [(wave, 16_000)]},
    ]
    conversation = [user(AUDIO, "Transcribe."), assistant("hello")]
    batches = [phi4_mm_collate_fn([{"conversation": conversation, **f}], processor) for f in forms]
    remote = [user("<|audio_1|>Transcribe."), assistant("hello")]
    batches.append(phi4_mm_collate_fn([{"conversation": remote, **forms[0]}], processor))
    inline = [
        user({"type": "audio", "audio": forms[0]["audio"]}, "Transcribe."),
        assistant("hello"),
    ]
    batches.append(phi4_mm_collate_fn([{"conversation": inline}], processor))
    for batch in batches[1:]:
        for key in ("input_ids", "labels", "audio_input_features"):
            assert torch.equal(batch[key], batches[0][key]), key
    assert token_count(batches[0], audio_id)[0] > 0


def test_image_and_audio_in_one_sample(processor, audio_id):
    image_id = processor.tokenizer.image_token_id
    conversation = [
        user({"type": "image", "image": make_image()}, AUDIO, "Both?"),
        assistant("Yes."),
    ]
    batch = phi4_mm_collate_fn(
        [example(conversation), example([user("hi"), assistant("yo")])], processor
    )
    assert {"image_pixel_values", "image_sizes", "image_attention_mask"} <= set(batch)
    assert batch["n_images_per_sample"].tolist() == [1, 0]
    assert token_count(batch, image_id)[0] >= 273
    assert ((batch["input_ids"] == image_id) & (batch["labels"] != IGNORE)).sum() == 0
    targets = batch["labels"][0][batch["labels"][0] != IGNORE]
    assert processor.tokenizer.decode(targets) == "Yes.<|end|>"


def test_no_hard_coded_truncation(processor):
    long = [user(AUDIO, "word " * 1200), assistant("ok")]
    batch = phi4_mm_collate_fn([example(long)], processor)
    assert batch["input_ids"].shape[1] > 1024


def test_max_length_truncation_never_cuts_audio(processor, audio_id):
    long_reply = [user(AUDIO, "Transcribe."), assistant("word " * 80)]
    audio_late = [user("word " * 80, AUDIO), assistant("ok")]
    examples = [example(long_reply), example([user("hi"), assistant("yo")])]
    with pytest.raises(ValueError, match="sample 0 has .* tokens, more than max_length=40"):
        phi4_mm_collate_fn(examples, processor, max_length=40)
    batch = phi4_mm_collate_fn(examples, processor, max_length=40, on_overflow="truncate")
    assert batch["input_ids"].shape == (2, 39) and batch.report.truncated == [0]
    assert token_count(batch, audio_id)[0] == int(batch["audio_embed_sizes"][0])
    batch = phi4_mm_collate_fn(
        [example(audio_late), examples[1]], processor, max_length=40, on_overflow="truncate"
    )
    assert [i for i, _ in batch.report.dropped] == [0] and "audio_input_features" not in batch


def test_wrong_sampling_rate_names_the_sample(processor):
    conversation = [user(AUDIO, "Transcribe."), assistant("hello")]
    bad = {
        "conversation": conversation,
        "audio": {"array": waveform(1.0, 8_000), "sampling_rate": 8_000},
    }
    with pytest.raises(ValueError, match="sample 1, audio 0: .* 8000 Hz .* expects 16000 Hz"):
        phi4_mm_collate_fn([example(conversation), bad], processor)


def test_audio_without_placeholder_names_the_sample(processor):
    conversation = [user("Transcribe."), assistant("hello")]
    with pytest.raises(ValueError, match="sample 0: .* 0 audio placeholders .* 1 audios"):
        phi4_mm_collate_fn([{"conversation": conversation, "audio": audio_data(0)}], processor)
