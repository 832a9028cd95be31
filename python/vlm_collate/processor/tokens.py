"""Tokenizer access: the tokenizer of a processor, token ids checked against the
vocabulary, the pad id, decoding. Media token facts live in the processor profile
(:mod:`.profile`)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..errors import CollateError


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
