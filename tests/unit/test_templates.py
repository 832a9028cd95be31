"""Labels on published chat templates with real vocabularies, against ground truth
written from each template's published format (independent of the library's
differential rendering): where each reply sits after its header, what the template
does to its text (trim, strip, reasoning removal, first text item only) and the
end-of-turn text that follows it. Both label paths (verified markers and the exact
path) must reproduce it on generated conversations.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from vlm_collate import build_labels, check_template
from vlm_collate.pipeline.labels import exact_labels, label_array
from vlm_collate.processor.markers import labels_plan
from vlm_collate.testing import builders, vocabularies
from vlm_collate.testing.vocabularies import template_text

IGNORE = -100
GLM_SPECIALS = ["[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>"]
#: Granite 3.x's role and end tokens are added special tokens of its (StarCoder-style)
#: vocabulary, which no package ships: they are added to the Qwen2 vocabulary here.
GRANITE_SPECIALS = ["<|start_of_role|>", "<|end_of_role|>", "<|end_of_text|>", "<|tool_call|>"]


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    return "".join(i["text"] for i in content if i["type"] == "text")


def _split_think(text: str) -> tuple[str, str]:
    """(reasoning, answer) of a content with a ``</think>`` (reasoning empty otherwise)."""
    if "</think>" not in text:
        return "", text
    reasoning = text.split("</think>")[0].rstrip("\n").split("<think>")[-1].lstrip("\n")
    return reasoning, text.split("</think>")[-1].lstrip("\n")


@dataclass
class Spec:
    """A template's published format, as ground truth: ``header`` precedes each reply,
    ``reply(messages, k, exclude)`` is the rendered text of message k that is a target,
    ``eot(messages, k)`` the end-of-turn text right after it."""

    template: str
    build: Callable[[str], Any]
    header: str
    reply: Callable[[list[dict], int, bool], str]
    eot: Callable[[list[dict], int], str]
    list_content: bool = True
    system: bool = True
    reasoning_rendered: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    typable_header: bool = False
    """The header is a token a user can type (an added token not marked special, not
    escaped in content): its markers would label user text, so the exact path is used."""
    exact_reason: str = ""
    """Where the header is plain text of the vocabulary (``ASSISTANT:``, `` [/INST]``), a
    user can type it: the markers are refused and the exact path is used, for the
    reason that holds this text."""
    list_only: bool = False
    """The template renders list content only (string content is silently dropped): the
    published format is the list form's rendering."""


def _plain(messages: list[dict], k: int, exclude: bool) -> str:
    return _text(messages[k]["content"])


def as_list(messages: list[dict]) -> list[dict]:
    """Every string content as one text item (what a list-only template renders)."""
    return [
        {**m, "content": [{"type": "text", "text": m["content"]}]}
        if isinstance(m["content"], str)
        else m
        for m in messages
    ]


def _llava_1_5_reply(messages: list[dict], k: int, exclude: bool) -> str:
    """LLaVA 1.5 writes each text item followed by a space: the reply is the items and
    the spaces between them (the last space separates it from the next role word)."""
    content = messages[k]["content"]
    items = [content] if isinstance(content, str) else [i["text"] for i in content]
    return " ".join(items)


def _qwen3_reply(messages: list[dict], k: int, exclude: bool) -> str:
    m = messages[k]
    content = m["content"]
    reasoning = m.get("reasoning_content")
    if reasoning is None:
        reasoning, content = _split_think(content)
    last_user = max(i for i, x in enumerate(messages) if x["role"] == "user")
    if k > last_user and (k == len(messages) - 1 or reasoning):
        if not reasoning or exclude:
            return content.lstrip("\n")  # the empty scaffold is the template's, no target
        return "<think>\n" + reasoning.strip("\n") + "\n</think>\n\n" + content.lstrip("\n")
    return content


def _deepseek_reply(messages: list[dict], k: int, exclude: bool) -> str:
    content = messages[k]["content"]
    return content.split("</think>")[-1] if "</think>" in content else content


def _glm_eot(messages: list[dict], k: int) -> str:
    following = [m for m in messages[k + 1 :] if m["role"] != "system"]
    return "<|user|>" if following else ""


def _const(text: str) -> Callable[[list[dict], int], str]:
    return lambda messages, k: text


def _qwen3_tokenizer(template: str) -> Any:
    tokenizer = builders.qwen3_omni_tokenizer()
    tokenizer.chat_template = template
    return tokenizer


def _qwen2_tokenizer(template: str, extra: tuple[str, ...] = ()) -> Any:
    tokenizer = builders.qwen2_tokenizer(extra)
    tokenizer.chat_template = template
    return tokenizer


SPECS: dict[str, Spec] = {
    "chatml_qwen2_5_vl": Spec(
        "qwen2_5_vl", _qwen2_tokenizer, "<|im_start|>assistant\n", _plain, _const("<|im_end|>")
    ),
    "qwen3_reasoning": Spec(
        "qwen3",
        _qwen3_tokenizer,
        "<|im_start|>assistant\n",
        _qwen3_reply,
        _const("<|im_end|>"),
        list_content=False,
        reasoning_rendered=True,
    ),
    "llama3_1": Spec(
        "llama3_1",
        vocabularies.llama3_tokenizer,
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
        lambda ms, k, ex: _text(ms[k]["content"]).strip(),
        _const("<|eot_id|>"),
        list_content=False,
    ),
    "llama3_2_vision": Spec(
        "llama3_2_vision",
        vocabularies.llama3_tokenizer,
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
        _plain,
        _const("<|eot_id|>"),
    ),
    "gemma3": Spec(
        "gemma3",
        vocabularies.gemma3_tokenizer,
        "<start_of_turn>model\n",
        lambda ms, k, ex: (
            ms[k]["content"].strip()
            if isinstance(ms[k]["content"], str)
            else "".join(i["text"].strip() for i in ms[k]["content"])
        ),
        _const("<end_of_turn>"),
    ),
    "mistral_small_3_1": Spec(
        "mistral_small_3_1",
        vocabularies.mistral_tekken_tokenizer,
        "[/INST]",
        lambda ms, k, ex: (
            ms[k]["content"] if isinstance(ms[k]["content"], str) else ms[k]["content"][0]["text"]
        ),
        _const("</s>"),
    ),
    "phi4_multimodal": Spec(
        "phi4_multimodal", vocabularies.phi4_tokenizer, "<|assistant|>", _plain, _const("<|end|>")
    ),
    "phi4_mini": Spec(
        "phi4_mini",
        vocabularies.phi4_tokenizer,
        "<|assistant|>",
        _plain,
        _const("<|end|>"),
        list_content=False,
    ),
    "deepseek_r1": Spec(
        "deepseek_r1",
        vocabularies.deepseek_tokenizer,
        "<｜Assistant｜>",
        _deepseek_reply,
        _const("<｜end▁of▁sentence｜>"),
        list_content=False,
        typable_header=True,
    ),
    "glm4": Spec(
        "glm4",
        lambda t: _qwen2_tokenizer(t, tuple(GLM_SPECIALS)),
        "<|assistant|>\n",
        _plain,
        _glm_eot,
        list_content=False,
    ),
    # Mistral-7B-Instruct-v0.2 (also LLaVA-NeXT's llava-v1.6-mistral): `` [/INST]`` is
    # plain text of its SentencePiece vocabulary; the reply follows a space and ends with eos.
    "mistral_v0_2": Spec(
        "mistral_v0_2",
        vocabularies.mistral_v1_tokenizer,
        " [/INST]",
        _plain,
        _const("</s>"),
        list_content=False,
        exact_reason="in user turns",
    ),
    # LLaVA 1.5 / Vicuna style: ``USER: `` / ``ASSISTANT: `` plain text, no closing token
    # (Llama 2's vocabulary ships in no package: Mistral v1's, the same SentencePiece
    # layout with <unk> 0, <s> 1, </s> 2, with <image> added at 32000).
    "llava_1_5": Spec(
        "llava_1_5",
        lambda t: vocabularies.mistral_v1_tokenizer(t, ["<image>"]),
        "ASSISTANT: ",
        _llava_1_5_reply,
        _const(""),
        exact_reason="no special token closes an assistant reply",
        list_only=True,
    ),
    # IBM Granite 3.0: <|start_of_role|>assistant<|end_of_role|> ... <|end_of_text|>, all
    # added special tokens (GRANITE_SPECIALS).
    "granite3": Spec(
        "granite3",
        lambda t: _qwen2_tokenizer(t, tuple(GRANITE_SPECIALS)),
        "<|start_of_role|>assistant<|end_of_role|>",
        _plain,
        _const("<|end_of_text|>"),
        list_content=False,
    ),
}


@pytest.fixture(scope="session")
def tokenizers_by_spec() -> dict[str, Any]:
    """One tokenizer per template, built once (vocabularies load from the disk cache)."""
    return {name: spec.build(template_text(spec.template)) for name, spec in SPECS.items()}


# --------------------------------------------------------------------------- ground truth


def spec_targets(
    name: str, tokenizer: Any, messages: list[dict], exclude: bool = False
) -> tuple[list[int], list[bool]]:
    """Token ids and targets from the published format (see :class:`Spec`)."""
    spec = SPECS[name]
    rendered = as_list(messages) if spec.list_only else messages
    text = tokenizer.apply_chat_template(rendered, tokenize=False)
    spans: list[tuple[int, int]] = []
    cursor = 0
    for k, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        at = text.index(spec.header, cursor) + len(spec.header)
        reply, eot = spec.reply(messages, k, exclude), spec.eot(messages, k)
        # The target text ends right before the end-of-turn, and sits after the header
        # (after any scaffold the template put between them).
        end = text.index(reply + eot, at) + len(reply)
        assert text.startswith(reply + eot, end - len(reply)), (name, reply, text)
        if reply or eot:  # an empty reply with nothing after it has no target
            spans.append((end - len(reply), end + len(eot)))
        cursor = end + len(eot)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    targets = [
        any(a < e and b > s for s, e in spans) or (a == b and any(s <= a < e for s, e in spans))
        for a, b in enc["offset_mapping"]
    ]
    return list(enc["input_ids"]), targets


def expected(ids: list[int], targets: list[bool], width: int) -> list[int]:
    return [t if keep else IGNORE for t, keep in zip(ids, targets)] + [IGNORE] * (width - len(ids))


def padded(rows: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids, mask


# --------------------------------------------------------------------------- conversations

WORDS = [
    "the",
    "cat",
    "A",
    "Yes",
    "2",
    "blue",
    "ünïcødé",
    "数字",
    "😀",
    "x=1;",
    "assistant",
    "user",
]
REPLY_WORDS = [*WORDS, "[/INST]", '"quoted"']


@st.composite
def texts(draw, words=WORDS, allow_empty=False) -> str:
    n = draw(st.integers(0 if allow_empty else 1, 5))
    parts = [draw(st.sampled_from(words)) for _ in range(n)]
    text = "".join(p + draw(st.sampled_from([" ", "", "\n", ", "])) for p in parts).rstrip(" ,")
    lead = draw(st.sampled_from(["", "", "\n", " "])) if text else ""
    trail = draw(st.sampled_from(["", "", "\n", " "])) if text else ""
    return lead + text + trail


@st.composite
def conversations(draw, spec: Spec):
    messages: list[dict] = []
    if spec.system and draw(st.booleans()):
        messages.append({"role": "system", "content": draw(texts())})
    for _ in range(draw(st.integers(1, 3))):
        question = draw(texts())
        messages.append({"role": "user", "content": question})
        kind = draw(st.sampled_from(["text", "echo", "empty", "parts", "think", "field"]))
        if kind == "echo":  # the reply repeats part of the question
            reply: Any = question.split()[0] if question.split() else "A"
        elif kind == "empty":
            reply = ""
        elif kind == "parts" and spec.list_content:
            reply = [{"type": "text", "text": draw(texts(REPLY_WORDS))} for _ in range(2)]
        elif kind == "think":
            reply = f"<think>\n{draw(texts())}\n</think>\n\n{draw(texts(REPLY_WORDS))}"
        else:
            reply = draw(texts(REPLY_WORDS))
        message = {"role": "assistant", "content": reply}
        if kind == "field" and spec.reasoning_rendered:
            message["reasoning_content"] = draw(texts())
        messages.append(message)
    if draw(st.integers(0, 4)) == 0:
        messages.append({"role": "user", "content": draw(texts())})
    return messages


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("name", sorted(SPECS))
def test_markers_are_verified_and_named(name, tokenizers_by_spec):
    plan = labels_plan(tokenizers_by_spec[name])
    if SPECS[name].typable_header:
        assert plan.method == "exact" and "in user turns" in plan.reason, plan.reason
        return
    if SPECS[name].exact_reason:
        assert plan.method == "exact" and SPECS[name].exact_reason in plan.reason, plan.reason
        assert check_template(tokenizers_by_spec[name]).method == "exact"
        return
    assert plan.method == "markers", plan.reason
    assert not plan.failed and plan.verified
    tokenizer = tokenizers_by_spec[name]
    header = SPECS[name].header.strip()
    decoded = [tokenizer.decode(s) for s in plan.markers.starts]
    assert any(header in d or d in header for d in decoded), decoded


@pytest.mark.parametrize("name", sorted(SPECS))
def test_generated_conversations_are_exact_on_both_paths(name, tokenizers_by_spec):
    tokenizer = tokenizers_by_spec[name]
    spec = SPECS[name]

    @settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.lists(conversations(spec), min_size=1, max_size=3))
    def check(batch):
        truth = [spec_targets(name, tokenizer, c) for c in batch]
        ids, mask = padded([t[0] for t in truth], tokenizer.pad_token_id)
        want = [expected(i, t, ids.shape[1]) for i, t in truth]
        labels = build_labels(ids, batch, tokenizer, attention_mask=mask)
        assert labels.tolist() == want
        exact, found = exact_labels(ids.numpy(), mask.numpy(), batch, tokenizer)
        assert exact.tolist() == want
        assert found.tolist() == [sum(m["role"] == "assistant" for m in c) for c in batch]

    check()


@pytest.mark.parametrize("name", ["qwen3_reasoning"])
def test_reasoning_can_be_excluded(name, tokenizers_by_spec):
    tokenizer = tokenizers_by_spec[name]
    conversation = [
        {"role": "user", "content": "Which is bigger, 2 or 3?"},
        {"role": "assistant", "content": "<think>\nCompare them.\n</think>\n\n3"},
        {"role": "user", "content": "And 5 or 4?"},
        {"role": "assistant", "content": "5", "reasoning_content": "5 > 4."},
    ]
    for exclude in (False, True):
        ids, targets = spec_targets(name, tokenizer, conversation, exclude=exclude)
        got, _ = label_array(
            torch.tensor([ids]),
            [conversation],
            tokenizer,
            reasoning="exclude" if exclude else "label",
        )
        assert got[0].tolist() == expected(ids, targets, len(ids))
        text = tokenizer.decode([t for t in got[0].tolist() if t != IGNORE])
        assert ("5 > 4." in text) is not exclude
        assert text.endswith("5<|im_end|>")


@pytest.mark.parametrize("name", ["deepseek_r1", "phi4_multimodal", "phi4_mini"])
def test_pad_equal_to_eos_without_a_mask(name, tokenizers_by_spec):
    """pad == eos and no attention mask: only the padded end of a row is padding, so every
    eos that closes a turn is labelled, the last one included."""
    tokenizer = tokenizers_by_spec[name]
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    batch = [
        [
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello."},
            {"role": "user", "content": "Bye"},
            {"role": "assistant", "content": "Goodbye, then."},
        ],
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yes"}],
    ]
    truth = [spec_targets(name, tokenizer, c) for c in batch]
    ids, _ = padded([t[0] for t in truth], tokenizer.pad_token_id)
    labels = build_labels(ids, batch, tokenizer)
    assert labels.tolist() == [expected(i, t, ids.shape[1]) for i, t in truth]


def test_mistral_reply_inside_the_default_system_prompt_is_not_labelled_there(tokenizers_by_spec):
    tokenizer = tokenizers_by_spec["mistral_small_3_1"]
    conversation = [
        {"role": "user", "content": 'Repeat "Le Chat" then answer: who made you?'},
        {"role": "assistant", "content": "Le Chat"},
        {"role": "user", "content": "Two parts?"},
        {
            "role": "assistant",
            "content": [{"type": "text", "text": "Mistral"}, {"type": "text", "text": " AI"}],
        },
    ]
    ids, targets = spec_targets("mistral_small_3_1", tokenizer, conversation)
    labels = build_labels(torch.tensor([ids]), [conversation], tokenizer)[0].tolist()
    assert labels == expected(ids, targets, len(ids))
    assert tokenizer.decode([t for t in labels if t != IGNORE]) == "Le Chat</s>Mistral</s>"


PLAIN_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] | capitalize }}: {{ m['content'] | trim }}\n\n"
    "{% endfor %}{{ eos_token }}"
)


def test_template_without_special_structure_uses_the_exact_path(caplog):
    tokenizer = _qwen2_tokenizer(PLAIN_TEMPLATE)
    plan = labels_plan(tokenizer)
    assert plan.method == "exact" and plan.failed
    conversation = [
        {"role": "user", "content": "Say Assistant: twice"},
        {"role": "assistant", "content": " Assistant: Assistant: "},
        {"role": "user", "content": "Now nothing"},
        {"role": "assistant", "content": ""},
    ]
    text = tokenizer.apply_chat_template(conversation, tokenize=False)
    first = text.index("Assistant: ", text.index("User: Now") - 40)
    assert text[first:].startswith("Assistant: Assistant: Assistant:")
    start = first + len("Assistant: ")
    span = (start, start + len("Assistant: Assistant:"))
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    want = [
        t if a < span[1] and b > span[0] else IGNORE
        for t, (a, b) in zip(enc["input_ids"], enc["offset_mapping"])
    ]
    labels = build_labels(torch.tensor([enc["input_ids"]]), [conversation], tokenizer)
    assert labels[0].tolist() == want


def test_exact_path_skips_expanded_media_and_added_bos():
    """The exact path maps a conversation's targets onto a processor row that holds
    expanded media runs and an extra leading special token."""
    tokenizer = vocabularies.phi4_tokenizer(
        template_text("phi4_multimodal"), image_token="<|endoftext10|>"
    )
    image = tokenizer.convert_tokens_to_ids("<|endoftext10|>")
    conversation = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "What?"}]},
        {"role": "assistant", "content": "A cat."},
    ]
    ids, targets = spec_targets("phi4_multimodal", tokenizer, conversation)
    at = ids.index(image)
    row = [
        tokenizer.convert_tokens_to_ids("<|endoftext1|>"),
        *ids[:at],
        *[image] * 7,
        *ids[at + 1 :],
    ]
    want = [IGNORE] * (8 + at) + expected(ids[at + 1 :], targets[at + 1 :], len(ids) - at - 1)
    mask = np.ones((1, len(row)), dtype=np.int64)
    labels, found = exact_labels(np.array([row]), mask, [conversation], tokenizer)
    assert labels[0].tolist() == want and found.tolist() == [1]
