"""Every family's real transformers processor, built offline, through the generic path.

Ground truth for labels comes from the template's own rendering: each assistant
text item is wrapped in private-use marker characters, the conversation rendered
again, and the markers' character positions give the reply spans in the plain
rendering (what the template transforms around the text, e.g. ``trim`` or a
``'\\n' +`` prefix, stays outside). The end-of-turn target is the special token
that starts where an assistant message's content ends, if the template writes one.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from vlm_collate import VLMCollator, default_collate_fn
from vlm_collate.testing.families import FAMILY_PROCESSORS

IGNORE = -100
OPEN, CLOSE = "\ue000", "\ue001"

#: family -> transformers class its builder returns
CLASSES = {
    "qwen2_vl": "Qwen2VLProcessor",
    "qwen3_vl": "Qwen3VLProcessor",
    "gemma3": "Gemma3Processor",
    "gemma4": "Gemma4Processor",
    "mllama": "MllamaProcessor",
    "llama4": "Llama4Processor",
    "pixtral": "PixtralProcessor",
    "mistral3": "PixtralProcessor",
    "llava_onevision": "LlavaOnevisionProcessor",
    "idefics3": "Idefics3Processor",
    "smolvlm": "SmolVLMProcessor",
    "internvl": "InternVLProcessor",
    "glm4v": "Glm4vProcessor",
}

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

#: families whose processor returns one placeholder per image (not expanded)
UNEXPANDED = {"mllama"}

#: families whose published template indexes or filters assistant content as a list
LIST_REPLIES = {"llava_onevision", "idefics3", "smolvlm"}

FAMILIES = list(FAMILY_PROCESSORS)


@functools.cache
def processor_of(name: str) -> Any:
    """Each family's processor, built once per test session."""
    return FAMILY_PROCESSORS[name]()


def image(seed: int = 0, width: int = 64, height: int = 48) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8), "RGB")


def reply(family: str, text: str) -> dict[str, Any]:
    """An assistant message, its content a list where the family's template needs one."""
    if family in LIST_REPLIES:
        return {"role": "assistant", "content": [{"type": "text", "text": text}]}
    return {"role": "assistant", "content": text}


def with_image(family: str, seed: int = 0) -> list[dict[str, Any]]:
    """A two-turn conversation, one image in the first user turn."""
    return [
        {
            "role": "user",
            "content": [
                {"type": "image", "image": image(seed)},
                {"type": "text", "text": "What is shown here?"},
            ],
        },
        reply(family, "A small cat on a blue sky."),
        {"role": "user", "content": [{"type": "text", "text": "And the colour?"}]},
        reply(family, "Blue, mostly."),
    ]


def text_only(family: str) -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": [{"type": "text", "text": "Say yes or no: yes"}]},
        reply(family, "yes"),
    ]


def bare(conversation: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation with image items holding no data (for rendering only)."""
    out = []
    for message in conversation:
        content = message["content"]
        if not isinstance(content, str):
            content = [{"type": "image"} if i["type"] == "image" else i for i in content]
        out.append({**message, "content": content})
    return out


def images_of(conversation: list[dict[str, Any]]) -> list[Image.Image]:
    return [
        item["image"]
        for m in conversation
        if not isinstance(m["content"], str)
        for item in m["content"]
        if item["type"] == "image"
    ]


def render(processor: Any, conversation: list[dict[str, Any]]) -> str:
    return processor.apply_chat_template(bare(conversation), tokenize=False)


def marked(conversation: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Assistant text wrapped in the private-use markers."""
    out = []
    for message in conversation:
        content = message["content"]
        if message["role"] == "assistant" and isinstance(content, str):
            message = {**message, "content": OPEN + content + CLOSE}
        elif message["role"] == "assistant":
            items = [{**i, "text": OPEN + i["text"] + CLOSE} for i in content]
            message = {**message, "content": items}
        out.append(message)
    return out


def ground_truth(
    processor: Any, conversation: list[dict[str, Any]]
) -> tuple[list[int], list[bool]]:
    """Text-only token ids of the rendering and which of them are training targets."""
    full = render(processor, conversation)
    with_marks = render(processor, marked(conversation))
    assert with_marks.replace(OPEN, "").replace(CLOSE, "") == full, "template alters the reply"
    spans, ends, shift = [], [], 0
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
    return ids, targets


def media_ids(processor: Any) -> set[int]:
    """Every id a media block can hold (placeholders and delimiters)."""
    names = (
        "image_token",
        "video_token",
        "boi_token",
        "eoi_token",
        "fake_image_token",
        "start_image_token",
        "end_image_token",
        "image_break_token",
        "image_end_token",
        "start_of_image_token",
        "end_of_image_token",
        "patch_token",
        "tile_x_separator_token",
        "tile_y_separator_token",
        "vision_start_token",
        "vision_end_token",
    )
    tokenizer = processor.tokenizer
    tokens = {getattr(processor, n, None) or getattr(tokenizer, n, None) for n in names}
    tokens |= {"<|begin_of_image|>", "<|end_of_image|>", "<start_of_image>", "<end_of_image>"}
    ids = {tokenizer.convert_tokens_to_ids(str(t)) for t in tokens if t}
    return ids - {tokenizer.unk_token_id, None}


def assert_labels_match(batch: dict, row: int, processor: Any, conversation: list) -> None:
    """Row ``row``'s labels equal the ground truth outside the media region; the media
    region (from the first differing token to the last) holds no target."""
    mask = batch["attention_mask"][row].bool()
    ids = batch["input_ids"][row][mask].tolist()
    labels = batch["labels"][row][mask].tolist()
    assert (batch["labels"][row][~mask] == IGNORE).all(), "padding labelled"
    gt_ids, gt_targets = ground_truth(processor, conversation)
    head = 0
    while head < min(len(ids), len(gt_ids)) and ids[head] == gt_ids[head]:
        head += 1
    tail = 0
    while tail < min(len(ids), len(gt_ids)) - head and ids[-1 - tail] == gt_ids[-1 - tail]:
        tail += 1
    if not images_of(conversation):
        assert ids == gt_ids, "text-only sample tokenized differently from its rendering"
    assert sum(gt_targets) > 0
    got = [label != IGNORE for label in labels]
    assert got[:head] == gt_targets[:head], "targets differ before the media"
    assert got[len(got) - tail :] == gt_targets[len(gt_targets) - tail :], "targets differ after"
    assert not any(got[head : len(got) - tail]), "a token of the media region is labelled"
    assert not any(gt_targets[head : len(gt_targets) - tail])
    assert all(label == t for label, t in zip(labels, ids) if label != IGNORE)
    assert not any(t in media_ids(processor) for t, g in zip(ids, got) if g)


# --------------------------------------------------------------------------- building


@pytest.mark.parametrize("family", FAMILIES)
def test_builds_offline_as_transformers_class(family):
    processor = processor_of(family)
    cls = type(processor)
    assert cls.__name__ == CLASSES[family]
    assert cls.__module__.startswith("transformers.")
    assert processor.chat_template


@pytest.mark.parametrize("family", sorted(REAL_IDS))
def test_special_tokens_at_real_ids(family):
    tokenizer = processor_of(family).tokenizer
    for token, tid in REAL_IDS[family].items():
        assert tokenizer.convert_tokens_to_ids(token) == tid, token
        assert tokenizer.decode([tid]) == token


@pytest.mark.parametrize("family", FAMILIES)
def test_template_renders_placeholder_and_reply(family):
    processor = processor_of(family)
    text = render(processor, with_image(family))
    placeholder = processor.image_token
    placeholder = getattr(placeholder, "content", placeholder)
    if family == "gemma3":
        placeholder = processor.boi_token
    assert text.count(placeholder) == 1
    assert "A small cat on a blue sky." in text and "Blue, mostly." in text
    assert "What is shown here?" in text


# --------------------------------------------------------------------------- processor call


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
    if family in UNEXPANDED:
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


@pytest.mark.parametrize("family", FAMILIES)
def test_processor_call_expands_images(family):
    processor = processor_of(family)
    conversation = with_image(family)
    text = render(processor, conversation)
    out = processor(text=[text], images=[images_of(conversation)], return_tensors="pt")
    assert placeholder_count(family, processor, out["input_ids"]) == expected_placeholders(
        family, processor, out
    )
    assert out["pixel_values"].shape[0] >= 1
    if family == "mllama":
        assert out["cross_attention_mask"].shape[:2] == out["input_ids"].shape


# --------------------------------------------------------------------------- generic path

_GLM4V_NO_END = (
    "library: GLM-4.1V's template closes an assistant reply with no end-of-turn token (the "
    "next '<|user|>' or the end of the text does); markers.labels_plan raises TemplateError "
    "'does not render assistant replies' instead of labelling the reply text"
)

#: (test, family) -> why the library's generic path fails there (strict xfails)
LIBRARY_FAILURES: dict[tuple[str, str], str] = {
    ("labels", "glm4v"): _GLM4V_NO_END,
    ("text_only", "glm4v"): _GLM4V_NO_END,
    ("media", "glm4v"): _GLM4V_NO_END,
    ("text_only", "smolvlm"): (
        "library: SmolVLM text-only reply 'yes' after a prompt ending in ' yes': the reply's "
        "token ' yes' spans the template's 'Assistant: ' space, and no token is labelled "
        "(neither ' yes' nor '<end_of_utterance>')"
    ),
}


def _cases(test: str) -> list:
    """Families for ``test``, the library's known failures marked strict xfail."""
    return [
        pytest.param(f, marks=pytest.mark.xfail(reason=LIBRARY_FAILURES[test, f], strict=True))
        if (test, f) in LIBRARY_FAILURES
        else f
        for f in FAMILIES
    ]


@functools.cache
def collated(family: str) -> dict:
    processor = processor_of(family)
    examples = [{"conversation": with_image(family)}, {"conversation": text_only(family)}]
    return default_collate_fn(examples, processor, shift=False)


@pytest.mark.parametrize("family", _cases("labels"))
def test_default_collate_labels_exact_with_image(family):
    batch = collated(family)
    assert_labels_match(batch, 0, processor_of(family), with_image(family))


@pytest.mark.parametrize("family", _cases("text_only"))
def test_default_collate_text_only_sample(family):
    batch = collated(family)
    assert_labels_match(batch, 1, processor_of(family), text_only(family))


@pytest.mark.parametrize("family", _cases("media"))
def test_default_collate_media_counts(family):
    processor = processor_of(family)
    batch = collated(family)
    direct = processor(
        text=[render(processor, with_image(family))],
        images=[images_of(with_image(family))],
        return_tensors="pt",
    )
    want = placeholder_count(family, processor, direct["input_ids"])
    got = [placeholder_count(family, processor, batch["input_ids"][r]) for r in range(2)]
    assert got == [want, 0]
    assert (
        torch.equal(
            batch["pixel_values"].float().flatten()[:64],
            direct["pixel_values"].float().flatten()[:64],
        )
        or batch["pixel_values"].dtype == torch.bfloat16
    )
    assert batch["pixel_values"].shape[1:] == direct["pixel_values"].shape[1:]


@pytest.mark.parametrize("family", ["qwen2_vl", "gemma3", "idefics3", "pixtral"])
def test_vlm_collator_resolves_and_matches(family):
    processor = processor_of(family)
    batch = VLMCollator(processor, shift=False)([{"conversation": with_image(family)}])
    assert_labels_match(batch, 0, processor, with_image(family))
