"""Tokenizer access: the tokenizer of a processor, special-token ids, decoding."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterable
from typing import Any

from .errors import CollateError


def tokenizer_of(processor: Any) -> Any:
    """The tokenizer of a processor (or the object itself when it is a tokenizer)."""
    return getattr(processor, "tokenizer", None) or processor


def token_id(tokenizer: Any, token: str, *, what: str = "token") -> int:
    """Id of ``token``, checked against the unknown id: a token missing from the
    vocabulary is a ValueError, never a silent ``unk``."""
    ids = tokenizer.convert_tokens_to_ids([token])
    tid = ids[0] if ids else None
    unk = getattr(tokenizer, "unk_token_id", None)
    if tid is None or (unk is not None and tid == unk and token != tokenizer.unk_token):
        raise CollateError(
            f"the {what} {token!r} is not in the tokenizer's vocabulary "
            f"({type(tokenizer).__name__}); add it as a special token or use the model's tokenizer"
        )
    return int(tid)


def optional_token_id(tokenizer: Any, token: str | None) -> int | None:
    """Id of ``token`` when it is in the vocabulary, else None."""
    if not token:
        return None
    try:
        return token_id(tokenizer, token)
    except (ValueError, TypeError, KeyError):
        return None


def pad_token_id(tokenizer: Any) -> int:
    """The tokenizer's pad id; a tokenizer without one is a clear error."""
    pad = getattr(tokenizer, "pad_token_id", None)
    if pad is None:
        raise CollateError(
            f"{type(tokenizer).__name__} has no pad token; set one "
            "(for example tokenizer.pad_token = tokenizer.eos_token) before collating"
        )
    return int(pad)


_MEDIA_ATTRIBUTES = (
    "image_token",
    "video_token",
    "audio_token",
    "media_token",
    "vision_start_token",
    "vision_end_token",
    "vision_bos_token",
    "vision_eos_token",
    "audio_bos_token",
    "audio_eos_token",
    "image_start_token",
    "image_end_token",
)


def media_token_ids(processor: Any) -> list[int]:
    """Ids of the media placeholder and delimiter tokens the processor or its tokenizer name."""
    tokenizer = tokenizer_of(processor)
    ids: set[int] = set()
    for owner in (processor, tokenizer):
        for attribute in _MEDIA_ATTRIBUTES:
            token = getattr(owner, attribute, None)
            if isinstance(token, str):
                tid = optional_token_id(tokenizer, token)
                if tid is not None:
                    ids.add(tid)
    return sorted(ids)


#: Known (open, close) delimiters around a media block, checked against the vocabulary:
#: Qwen2/2.5-VL and Qwen3 (vision, audio), Qwen2.5-Omni, Kimi-VL and Kimi K2.5, Gemma 3
#: and 3n, Llama 4, InternVL.
_BLOCK_DELIMITERS = (
    ("<|vision_start|>", "<|vision_end|>"),
    ("<|audio_start|>", "<|audio_end|>"),
    ("<|vision_bos|>", "<|vision_eos|>"),
    ("<|audio_bos|>", "<|audio_eos|>"),
    ("<|media_start|>", "<|media_end|>"),
    ("<|media_begin|>", "<|media_end|>"),
    ("<start_of_image>", "<end_of_image>"),
    ("<start_of_audio>", "<end_of_audio>"),
    ("<|image_start|>", "<|image_end|>"),
    ("<img>", "</img>"),
)

#: (open, close) attribute names processors and tokenizers use for those delimiters.
_BLOCK_ATTRIBUTES = (
    ("vision_start_token", "vision_end_token"),
    ("vision_bos_token", "vision_eos_token"),
    ("audio_bos_token", "audio_eos_token"),
    ("audio_start_token", "audio_end_token"),
    ("image_start_token", "image_end_token"),
    ("boi_token", "eoi_token"),
    ("boa_token", "eoa_token"),
    ("media_start_token", "media_end_token"),
)

_PLACEHOLDER_ATTRIBUTES = ("image_token", "video_token", "audio_token", "media_token")


def _special_in_vocabulary(tokenizer: Any, token: Any) -> int | None:
    """Id of ``token`` when it is one token of the vocabulary, else None."""
    if not isinstance(token, str) or not token:
        return None
    tid = optional_token_id(tokenizer, token)
    if tid is None:
        return None
    try:
        ids = tokenizer(token, add_special_tokens=False)["input_ids"]
    except Exception:  # noqa: BLE001 - a tokenizer that cannot encode it alone
        return None
    return tid if list(ids) == [tid] else None


_BLOCKS: weakref.WeakKeyDictionary[Any, tuple[list[int], list[int], list[int]]] = (
    weakref.WeakKeyDictionary()
)


def media_block_ids(processor: Any) -> tuple[list[int], list[int], list[int]]:
    """``(placeholder ids, block-open ids, block-close ids)`` of a processor's media:
    the tokens the processor expands per item (``<|image_pad|>``), and the paired
    delimiters around each block (``<|vision_start|>``/``<|vision_end|>``), from the
    processor's and tokenizer's attributes and the known delimiter pairs, each
    checked to be one token of the vocabulary. Open and close lists are paired."""
    try:
        cached = _BLOCKS.get(processor)
    except TypeError:
        cached = None
    if cached is None:
        cached = _media_block_ids(processor)
        with contextlib.suppress(TypeError):
            _BLOCKS[processor] = cached
    return list(cached[0]), list(cached[1]), list(cached[2])


def _media_block_ids(processor: Any) -> tuple[list[int], list[int], list[int]]:
    tokenizer = tokenizer_of(processor)
    placeholders: set[int] = set()
    pairs: dict[tuple[int, int], None] = {}
    for owner in (processor, tokenizer):
        for attribute in _PLACEHOLDER_ATTRIBUTES:
            tid = _special_in_vocabulary(tokenizer, getattr(owner, attribute, None))
            if tid is not None:
                placeholders.add(tid)
        for attribute in ("media_placeholder_token_id", "image_token_id", "video_token_id"):
            value = getattr(owner, attribute, None)
            if (
                isinstance(value, int)
                and value >= 0
                and value != getattr(tokenizer, "unk_token_id", None)
            ):
                placeholders.add(int(value))
        for open_attr, close_attr in _BLOCK_ATTRIBUTES:
            opened = _special_in_vocabulary(tokenizer, getattr(owner, open_attr, None))
            closed = _special_in_vocabulary(tokenizer, getattr(owner, close_attr, None))
            if opened is not None and closed is not None:
                pairs[(opened, closed)] = None
    for open_token, close_token in _BLOCK_DELIMITERS:
        opened = _special_in_vocabulary(tokenizer, open_token)
        closed = _special_in_vocabulary(tokenizer, close_token)
        if opened is not None and closed is not None:
            pairs[(opened, closed)] = None
    pairs = {p: None for p in pairs if p[0] not in placeholders and p[1] not in placeholders}
    return sorted(placeholders), [p[0] for p in pairs], [p[1] for p in pairs]


def decode_single_token(tokenizer: Any, token: int | Iterable[int] | Any) -> str:
    """Text of one token id, accepting an int, a one-element list or a tensor,
    across tokenizers that want an int or a list."""
    if hasattr(token, "tolist"):
        token = token.tolist()
    if isinstance(token, (list, tuple)):
        if len(token) != 1:
            raise CollateError(f"decode_single_token takes one id, got {len(token)}")
        token = token[0]
    tid = int(token)
    try:
        return tokenizer.decode([tid])
    except (TypeError, ValueError):
        return tokenizer.decode(tid)
