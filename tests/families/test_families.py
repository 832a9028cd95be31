"""Every family, the seed's and the new ones, through the same checks on the processor
class it is tested on (transformers' own, or a named stand-in for remote code).

Ground truth for labels comes from the template's own rendering: each assistant text
is wrapped in private-use marker characters, the conversation rendered again, and the
markers' character positions give the reply spans in the plain rendering; the
end-of-turn target is the special token that starts where a reply ends, if the
template writes one. Media tokens are named here independently of the library.
Nemotron-Parse (an encoder-decoder without a chat template, one page per sample) is
checked in its own file.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from family_checks import with_appended_stop
from helpers import IGNORE, make_image, user
from vlm_collate import get_collate_fn, testing
from vlm_collate.collator import COLLATE_FNS
from vlm_collate.errors import SampleError
from vlm_collate.processor.family import FAMILIES
from vlm_collate.testing.families import FAMILY_PROCESSORS

OPEN, CLOSE = "\ue000", "\ue001"

#: keys along the token axis (axis 1), shifted, cut and padded with the ids
TOKEN_KEYS = ("input_ids", "attention_mask", "token_type_ids", "mm_token_type_ids",
              "cross_attention_mask")  # fmt: skip

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@dataclass(frozen=True)
class Case:
    """A family as tested: its builder, the class it builds, its registered family,
    whether its template needs list content for replies, and whether it takes videos."""

    build: Callable[[], Any]
    cls: str
    family: str
    list_replies: bool = False
    video: bool = False


CASES: dict[str, Case] = {
    "qwen2_vl": Case(testing.qwen2_vl_processor, "Qwen2VLProcessor", "qwen2_5_vl", video=True),
    "qwen2_5_vl": Case(
        testing.qwen2_5_vl_processor, "Qwen2_5_VLProcessor", "qwen2_5_vl", video=True
    ),
    "qwen3_vl": Case(testing.qwen3_vl_processor, "Qwen3VLProcessor", "qwen2_5_vl", video=True),
    "qwen3_omni": Case(
        testing.qwen3_omni_processor, "Qwen3OmniMoeProcessor", "qwen3_omni", video=True
    ),
    "phi4_mm": Case(testing.phi4_multimodal_processor, "Phi4MultimodalProcessor", "phi4_mm"),
    "kimi_vl": Case(testing.kimi_vl_processor, "KimiVLStandIn", "kimi_vl"),
    "kimi_k25": Case(testing.kimi_k25_processor, "Kimi_K25Processor", "kimi_k25"),
    "kimi_k25_remote": Case(testing.kimi_k25_remote_processor, "KimiK25RemoteStandIn", "kimi_k25"),
    "gemma3": Case(testing.gemma3_processor, "Gemma3Processor", "gemma3"),
    "gemma4": Case(testing.gemma4_processor, "Gemma4Processor", "gemma4", video=True),
    "mllama": Case(testing.mllama_processor, "MllamaProcessor", "mllama"),
    "llama4": Case(testing.llama4_processor, "Llama4Processor", "llama4"),
    "pixtral": Case(testing.pixtral_processor, "PixtralProcessor", "pixtral"),
    "mistral3": Case(testing.mistral3_processor, "PixtralProcessor", "pixtral"),
    "llava_onevision": Case(
        testing.llava_onevision_processor,
        "LlavaOnevisionProcessor",
        "llava_onevision",
        list_replies=True,
        video=True,
    ),
    "idefics3": Case(
        testing.idefics3_processor, "Idefics3Processor", "idefics3", list_replies=True
    ),
    "smolvlm": Case(
        testing.smolvlm_processor, "SmolVLMProcessor", "idefics3", list_replies=True, video=True
    ),
    "internvl": Case(testing.internvl_processor, "InternVLProcessor", "internvl", video=True),
    "glm4v": Case(testing.glm4v_processor, "Glm4vProcessor", "glm4v", video=True),
}


#: (check, case) -> why the library fails there (strict xfails: a fix turns them red)
LIBRARY_FAILURES: dict[tuple[str, str], str] = {
}  # fmt: skip


def cases(check: str, names: list[str] | None = None) -> list:
    """Case names for ``check``, the library's known failures marked strict xfail."""
    return [
        pytest.param(n, marks=pytest.mark.xfail(reason=LIBRARY_FAILURES[check, n], strict=True))
        if (check, n) in LIBRARY_FAILURES
        else n
        for n in names or list(CASES)
    ]


@functools.cache
def processor_of(name: str) -> Any:
    """Each case's processor, built once per test session."""
    return CASES[name].build()


def collate_fn(name: str) -> Callable[..., Any]:
    return FAMILIES[CASES[name].family].collate_fn


def collate(name: str, conversations: list, **options: Any) -> dict:
    examples = [{"conversation": c} for c in conversations]
    return collate_fn(name)(examples, processor_of(name), **options)


# --------------------------------------------------------------------------- conversations


def reply(name: str, text: str) -> dict[str, Any]:
    """An assistant message, its content a list where the case's template needs one."""
    if CASES[name].list_replies:
        return {"role": "assistant", "content": [{"type": "text", "text": text}]}
    return {"role": "assistant", "content": text}


def with_image(name: str, images: int = 1, seed: int = 0) -> list[dict[str, Any]]:
    """Two turns; the images (of different sizes) in the first user turn."""
    items = [
        {"type": "image", "image": make_image(64 + 16 * k, seed=seed + k)} for k in range(images)
    ]
    return [
        user(*items, "What is shown here?"),
        reply(name, "A small cat on a blue sky."),
        user("And the colour?"),
        reply(name, "Blue, mostly."),
    ]


def text_only(name: str) -> list[dict[str, Any]]:
    return [user("Say yes or no: yes"), reply(name, "yes")]


def text_two_turns(name: str) -> list[dict[str, Any]]:
    return [user("Count: 1, 2"), reply(name, "3, 4 and 5."), user("More?"), reply(name, "")]


def long_reply(name: str) -> list[dict[str, Any]]:
    return [
        user({"type": "image", "image": make_image(seed=5)}, "Describe."),
        reply(name, "word " * 40),
    ]


# --------------------------------------------------------------------------- ground truth


def bare(conversation: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation with media items holding no data (for rendering only)."""
    out = []
    for message in conversation:
        content = message["content"]
        if not isinstance(content, str):
            content = [{"type": i["type"]} if i["type"] != "text" else i for i in content]
        out.append({**message, "content": content})
    return out


def marked(conversation: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Assistant text wrapped in the private-use markers."""
    out = []
    for message in conversation:
        content = message["content"]
        if message["role"] == "assistant" and isinstance(content, str):
            message = {**message, "content": OPEN + content + CLOSE}
        elif message["role"] == "assistant":
            message = {
                **message,
                "content": [{**i, "text": OPEN + i["text"] + CLOSE} for i in content],
            }
        out.append(message)
    return out


def render(processor: Any, conversation: list[dict[str, Any]]) -> str:
    return processor.apply_chat_template(bare(conversation), tokenize=False)


def ground_truth(
    processor: Any, conversation: list[dict[str, Any]]
) -> tuple[list[int], list[bool]]:
    """Text-only token ids of the rendering and which of them are training targets."""
    full = render(processor, conversation)
    with_marks = render(processor, marked(conversation))
    assert with_marks.replace(OPEN, "").replace(CLOSE, "") == full, "template alters the reply"
    spans, ends, shift, start = [], [], 0, 0
    for i, ch in enumerate(with_marks):
        if ch == OPEN:
            start = i - shift
            shift += 1
        elif ch == CLOSE:
            spans.append((start, i - shift))
            ends.append(i - shift)
            shift += 1
    tokenizer = processor.tokenizer
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    targets = [any(s < b and e > a for a, b in spans) for s, e in offsets]
    special = set(tokenizer.all_special_ids) | {
        i for i, t in tokenizer.added_tokens_decoder.items() if t.special
    }
    for end in ends:
        for k, (s, _) in enumerate(offsets):
            if s == end and ids[k] in special:
                targets[k] = True
                break
    return with_appended_stop(processor, conversation, ids, targets)


_MEDIA_ATTRIBUTES = (
    "image_token", "video_token", "audio_token", "boi_token", "eoi_token", "boa_token",
    "eoa_token", "fake_image_token", "global_image_token", "start_image_token",
    "end_image_token", "image_break_token", "image_end_token", "img_patch_token", "tile_token",
    "tile_global_token", "start_of_img_token", "end_of_img_token", "vision_start_token",
    "vision_end_token", "vision_bos_token", "vision_eos_token", "audio_bos_token",
    "audio_eos_token",
)  # fmt: skip
_MEDIA_STRINGS = (
    "<|vision_start|>", "<|vision_end|>", "<|begin_of_image|>", "<|end_of_image|>",
    "<|begin_of_video|>", "<|end_of_video|>", "<start_of_image>", "<end_of_image>",
    "<image_soft_token>", "<|media_start|>", "<|media_end|>", "<|media_begin|>",
    "<|media_pad|>", "<|audio_start|>", "<|audio_end|>",
)  # fmt: skip


@functools.cache
def media_ids(name: str) -> frozenset[int]:
    """Every id a media block of the case can hold (placeholders, delimiters, breaks)."""
    processor = processor_of(name)
    tokenizer = processor.tokenizer
    tokens = set(_MEDIA_STRINGS)
    for attribute in _MEDIA_ATTRIBUTES:
        for owner in (processor, tokenizer):
            value = getattr(owner, attribute, None)
            if value is not None:
                tokens.add(str(getattr(value, "content", value)))
    ids = {i for t in tokens for i in [tokenizer.convert_tokens_to_ids(t)] if i is not None}
    for kind in ("image", "video", "audio"):
        ids |= {i for i in getattr(processor, f"{kind}_token_ids", None) or [] if i is not None}
    if getattr(processor, "media_placeholder_token_id", None) is not None:
        ids.add(processor.media_placeholder_token_id)
    return frozenset(ids - {tokenizer.unk_token_id})


def row(batch: dict, r: int) -> tuple[list[int], list[int]]:
    """Row ``r``'s attended ids and labels (unshifted batch)."""
    mask = batch["attention_mask"][r].bool()
    assert (batch["labels"][r][~mask] == IGNORE).all(), "padding labelled"
    return batch["input_ids"][r][mask].tolist(), batch["labels"][r][mask].tolist()


def assert_labels_match(name: str, batch: dict, r: int, conversation: list) -> None:
    """Row ``r``'s labels equal the ground truth outside the media region (from the
    first token that differs from the text-only rendering to the last); no token of the
    media region and no media token is labelled."""
    processor = processor_of(name)
    ids, labels = row(batch, r)
    gt_ids, gt_targets = ground_truth(processor, conversation)
    head = 0
    while head < min(len(ids), len(gt_ids)) and ids[head] == gt_ids[head]:
        head += 1
    tail = 0
    while tail < min(len(ids), len(gt_ids)) - head and ids[-1 - tail] == gt_ids[-1 - tail]:
        tail += 1
    has_media = any(
        not isinstance(m["content"], str) and any(i["type"] != "text" for i in m["content"])
        for m in conversation
    )
    if not has_media:
        assert ids == gt_ids, "a text-only sample tokenized differently from its rendering"
    assert sum(gt_targets) > 0
    got = [label != IGNORE for label in labels]
    assert got[:head] == gt_targets[:head], "targets differ before the media"
    assert got[len(got) - tail :] == gt_targets[len(gt_targets) - tail :], "targets differ after"
    assert not any(got[head : len(got) - tail]), "a token of the media region is labelled"
    assert not any(gt_targets[head : len(gt_targets) - tail])
    assert all(label == t for label, t in zip(labels, ids) if label != IGNORE)
    assert not any(t in media_ids(name) for t, g in zip(ids, got) if g)


@functools.cache
def mixed(name: str) -> dict:
    """An unshifted batch: one image, text only, two images."""
    conversations = [with_image(name), text_only(name), with_image(name, images=2, seed=3)]
    return collate(name, conversations, shift=False)


# --------------------------------------------------------------------------- registry


@pytest.mark.parametrize("name", list(CASES))
def test_registry_resolves_the_class_and_model_type(name):
    processor = processor_of(name)
    case = CASES[name]
    assert type(processor).__name__ == case.cls
    if not case.cls.endswith("StandIn"):
        assert type(processor).__module__.startswith("transformers.")
    assert get_collate_fn(processor) is collate_fn(name)
    family = FAMILIES[case.family]
    for model_type in family.model_types:  # a generic or remote-code class, named by type
        assert get_collate_fn(SimpleNamespace(model_type=model_type)) is family.collate_fn
    for cls in family.processor_classes:
        assert COLLATE_FNS[cls] is family.collate_fn


def test_every_family_is_registered_and_tested():
    tested = {c.family for c in CASES.values()} | {"nemotron_parse", "default"}
    assert tested == set(FAMILIES)


# --------------------------------------------------------------------------- labels


@pytest.mark.parametrize("name", cases("labels"))
def test_labels_exact_with_images(name):
    batch = mixed(name)
    assert_labels_match(name, batch, 0, with_image(name))
    assert_labels_match(name, batch, 2, with_image(name, images=2, seed=3))


@pytest.mark.parametrize("name", cases("text_only"))
def test_text_only_rows_in_a_mixed_batch_and_alone(name):
    assert_labels_match(name, mixed(name), 1, text_only(name))
    batch = collate(name, [text_two_turns(name), text_only(name)], shift=False)
    assert not any(k.startswith("pixel_values") for k in batch)
    assert_labels_match(name, batch, 0, text_two_turns(name))
    assert_labels_match(name, batch, 1, text_only(name))


# --------------------------------------------------------------------------- media counts


def expanded_count(name: str, ids: torch.Tensor) -> int:
    """How many tokens of the case's media blocks ``ids`` holds."""
    return int(np.isin(ids.numpy(), sorted(media_ids(name))).sum())


@pytest.mark.parametrize("name", cases("media"))
def test_media_counts_match_each_sample_alone(name):
    batch = mixed(name)
    conversations = [with_image(name), text_only(name), with_image(name, images=2, seed=3)]
    got = [
        expanded_count(name, batch["input_ids"][r][batch["attention_mask"][r].bool()])
        for r in range(3)
    ]
    alone = [collate(name, [c], shift=False) for c in conversations]
    assert got == [expanded_count(name, b["input_ids"][0]) for b in alone]
    assert got[0] > 0 and got[1] == 0 and got[2] > got[0]
    pixels = [k for k in batch if k.startswith("pixel_values") or k == "image_pixel_values"]
    assert pixels, "no pixel tensor in a batch with images"


@pytest.mark.parametrize("name", list(CASES))
def test_a_placeholder_without_its_image_names_the_sample(name):
    processor = processor_of(name)
    placeholder = processor.image_token if getattr(processor, "image_token", None) else None
    placeholder = placeholder or processor.tokenizer.convert_ids_to_tokens(
        processor.media_placeholder_token_id
    )
    wrong = [user({"type": "image", "image": make_image(seed=1)}, "Two?"), reply(name, "ok")]
    wrong[0]["content"].append(
        {"type": "text", "text": str(getattr(placeholder, "content", placeholder))}
    )
    with pytest.raises(
        SampleError, match=r"sample 1, message 0 \(user\): its text holds the media string"
    ):
        collate(name, [text_only(name), wrong], on_special_text="keep")


# --------------------------------------------------------------------------- truncation


def _block_bounds(name: str, ids: list[int]) -> tuple[int, int]:
    at = [i for i, t in enumerate(ids) if t in media_ids(name)]
    return at[0], at[-1]


@pytest.mark.parametrize("name", cases("truncation"))
def test_truncation_keeps_or_drops_a_whole_media_block(name):
    conversations = [long_reply(name), text_only(name)]
    full = collate(name, conversations, shift=False)
    ids, _ = row(full, 0)
    first, last = _block_bounds(name, ids)
    limit = (last + 1 + len(ids)) // 2  # inside the reply, after the block
    assert last < limit < len(ids)
    batch = collate(name, conversations, shift=False, max_length=limit, on_overflow="truncate")
    assert 0 in batch.report.truncated and not batch.report.dropped
    assert torch.equal(batch["input_ids"][0, :limit], full["input_ids"][0, :limit])
    for key in TOKEN_KEYS[1:]:
        if key in full:
            assert batch[key].shape[:2] == batch["input_ids"].shape, key
            assert torch.equal(batch[key][0, :limit], full[key][0, :limit]), key
    for cut in sorted({max(first, 2), (first + last) // 2, last} - {last + 1}):
        batch = collate(name, conversations, shift=False, max_length=cut, on_overflow="truncate")
        assert [i for i, _ in batch.report.dropped] == [0], cut
        assert not any(k.startswith("pixel_values") for k in batch)


# --------------------------------------------------------------------------- shift, padding


@pytest.mark.parametrize("name", cases("shift"))
def test_shift_moves_every_token_axis_tensor_with_the_ids(name):
    unshifted = mixed(name)
    conversations = [with_image(name), text_only(name), with_image(name, images=2, seed=3)]
    shifted = collate(name, conversations)
    assert shifted.keys() - {"shift_labels"} == unshifted.keys()
    assert torch.equal(shifted["labels"], unshifted["labels"][:, 1:])
    assert torch.equal(shifted["shift_labels"], shifted["labels"])
    for key, value in unshifted.items():
        if key in TOKEN_KEYS:
            assert torch.equal(shifted[key], value[:, :-1]), key
        elif key != "labels" and isinstance(value, torch.Tensor):
            assert torch.equal(shifted[key], value), key


@pytest.mark.parametrize("name", cases("padding"))
def test_left_padding_and_multiple_of(name):
    right = mixed(name)
    conversations = [with_image(name), text_only(name), with_image(name, images=2, seed=3)]
    left = collate(name, conversations, shift=False, padding_side="left", pad_to_multiple_of=8)
    width = left["input_ids"].shape[1]
    assert width % 8 == 0 and width >= right["input_ids"].shape[1]
    lengths = right["attention_mask"].sum(-1).tolist()
    for key in [*(k for k in TOKEN_KEYS if k in right), "labels"]:
        assert left[key].shape[:2] == (3, width), key
        for r, n in enumerate(lengths):
            assert torch.equal(left[key][r, width - n :], right[key][r, :n]), key
    pad = processor_of(name).tokenizer.pad_token_id
    n = lengths[1]
    assert (left["input_ids"][1, : width - n] == pad).all()
    assert (left["labels"][1, : width - n] == IGNORE).all()


# --------------------------------------------------------------------------- videos


def video_conversation(name: str) -> list[dict[str, Any]]:
    return [
        user({"type": "video", "video": testing.video(frames=4)}, "What happens?"),
        reply(name, "A dog runs."),
    ]


@pytest.mark.parametrize("name", cases("video", [n for n, c in CASES.items() if c.video]))
def test_videos(name):
    conversations = [video_conversation(name), text_only(name)]
    batch = collate(name, conversations, shift=False)
    assert any("video" in k or k == "pixel_values" for k in batch)
    assert_labels_match(name, batch, 0, video_conversation(name))
    assert_labels_match(name, batch, 1, text_only(name))
    ids, _ = row(batch, 0)
    assert expanded_count(name, torch.tensor(ids)) > 1


# --------------------------------------------------------------------------- DataLoader


def test_dataloader_with_workers():
    from torch.utils.data import DataLoader

    from vlm_collate import VLMCollator

    name = "mllama"  # a token axis that is not the last travels through workers
    conversations = [with_image(name), text_only(name)] * 2
    loader = DataLoader(
        [{"conversation": c} for c in conversations],
        batch_size=2,
        num_workers=2,
        collate_fn=VLMCollator(processor_of(name), max_length=96, pad_to_max_length=True),
    )
    batches = list(loader)
    assert [tuple(b["input_ids"].shape) for b in batches] == [(2, 96), (2, 96)]
    assert [tuple(b["cross_attention_mask"].shape[:2]) for b in batches] == [(2, 96), (2, 96)]
    for b in batches:
        assert torch.equal(b["labels"], mixed_two(name)["labels"])


@functools.cache
def mixed_two(name: str) -> dict:
    conversations = [with_image(name), text_only(name)]
    return collate(name, conversations, shift=False, max_length=96, pad_to_max_length=True)


# --------------------------------------------------------------------------- the builders


#: special tokens at the released checkpoints' ids (families on a real vocabulary)
REAL_IDS = {
    "qwen2_vl": {"<|image_pad|>": 151655, "<|im_end|>": 151645},
    "qwen3_vl": {"<|image_pad|>": 151655, "<think>": 151667},
    "gemma3": {"<start_of_image>": 255999, "<image_soft_token>": 262144, "<end_of_turn>": 106},
    "mllama": {"<|image|>": 128256, "<|eot_id|>": 128009},
    "llama4": {"<|image|>": 200090, "<|patch|>": 200092, "<|eot|>": 200008},
    "pixtral": {"[IMG]": 10, "[IMG_BREAK]": 12, "[IMG_END]": 13, "</s>": 2},
    "mistral3": {"[IMG]": 10, "[SYSTEM_PROMPT]": 17, "</s>": 2},
    "llava_onevision": {"<image>": 151646, "<|im_end|>": 151645},
    "idefics3": {"<fake_token_around_image>": 128256, "<image>": 128257},
    "internvl": {"<img>": 151665, "<IMG_CONTEXT>": 151667, "</img>": 151666},
}


@pytest.mark.parametrize("family", sorted(REAL_IDS))
def test_special_tokens_at_real_ids(family):
    tokenizer = processor_of(family).tokenizer
    for token, tid in REAL_IDS[family].items():
        assert tokenizer.convert_tokens_to_ids(token) == tid, token
        assert tokenizer.decode([tid]) == token


def image_token_id(processor: Any) -> int:
    if getattr(processor, "image_token_id", None) is not None:
        return int(processor.image_token_id)
    token = processor.image_token
    return processor.tokenizer.convert_tokens_to_ids(getattr(token, "content", token))


def placeholder_id(family: str, processor: Any) -> int:
    """The id a processor repeats for each image feature."""
    if family == "llama4":
        return processor.tokenizer.convert_tokens_to_ids("<|patch|>")
    if family == "gemma3":
        return processor.tokenizer.image_token_id
    return image_token_id(processor)


def placeholder_count(family: str, processor: Any, ids: torch.Tensor) -> int:
    return int((ids == placeholder_id(family, processor)).sum())


def expected_placeholders(family: str, processor: Any, out: dict) -> int:
    """How many placeholders one 64x48 image should get, from the model's published
    size rules applied to what the image processor returned (not from the ids)."""
    pixels = out["pixel_values"]
    if family in {"mllama"}:
        return 1
    if family in ("qwen2_vl", "qwen3_vl", "glm4v"):
        merge = processor.image_processor.merge_size
        return int(out["image_grid_thw"].prod(-1).sum()) // merge**2
    if family in ("idefics3", "smolvlm"):
        return pixels.shape[1] * processor.image_seq_len
    if family == "internvl":
        return pixels.shape[0] * processor.image_seq_length
    if family == "llama4":
        return pixels.shape[0] * (pixels.shape[-1] // 14) ** 2 // 4
    if family in ("pixtral", "mistral3"):
        step = processor.patch_size * processor.spatial_merge_size
        height, width = out["image_sizes"][0].tolist()
        return -(-height // step) * -(-width // step)
    if family == "gemma3":
        return processor.image_seq_length
    counts = processor._get_num_multimodal_tokens(image_sizes=[(48, 64)])["num_image_tokens"]
    return int(sum(counts))


@pytest.mark.parametrize("family", sorted(FAMILY_PROCESSORS))
def test_processor_call_expands_images(family):
    processor = processor_of(family)
    conversation = with_image(family)
    text = render(processor, conversation)
    images = [i["image"] for i in conversation[0]["content"] if i["type"] == "image"]
    out = processor(text=[text], images=[images], return_tensors="pt")
    assert placeholder_count(family, processor, out["input_ids"]) == expected_placeholders(
        family, processor, out
    )
    assert out["pixel_values"].shape[0] >= 1
    if family == "mllama":
        assert out["cross_attention_mask"].shape[:2] == out["input_ids"].shape
