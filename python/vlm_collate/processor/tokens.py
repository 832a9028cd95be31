"""Tokenizer access: the tokenizer of a processor, token ids checked against the
vocabulary, the pad id, decoding. Media token facts live in the processor profile
(:mod:`.profile`)."""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from ..errors import CollateError

logger = logging.getLogger(__name__)


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


#: Methods of transformers' fast tokenizer class on the way from ``tokenizer(texts)`` to
#: its Rust backend's ``encode_batch`` (and hooks some subclasses add on that way, such
#: as the translation tokenizers' ``_switch_to_input_mode``): a class that defines or
#: overrides one is always called.
_ENCODE_PATH = (
    "__call__",
    "_call_one",
    "_encode_plus",
    "_batch_encode_plus",
    "_convert_encoding",
    "_switch_to_input_mode",
    "set_truncation_and_padding",
    "_get_padding_truncation_strategies",
)

#: Calls per tokenizer whose direct ids are compared with ``tokenizer(texts)``'s.
SELF_CHECKS = 2

_direct_state: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
"""Per tokenizer: its self-checks left (``-1``: the direct path is off for it)."""
_state_lock = threading.Lock()


def _checks_left(tokenizer: Any) -> int | None:
    """The tokenizer's self-checks left (``-1``: off), or None where it cannot be keyed
    (a class with ``__eq__`` and no ``__hash__``): such a tokenizer is always called."""
    try:
        with _state_lock:
            return _direct_state.setdefault(tokenizer, SELF_CHECKS)
    except TypeError:
        return None


def _direct_encoder(tokenizer: Any) -> Callable[..., Any] | None:
    """The Rust backend's batch encoder of a tokenizer whose ``tokenizer(texts)["input_ids"]``
    it reproduces: transformers' own fast tokenizer class on the encode path (no subclass
    or instance override), the backend with no truncation or padding set and its
    special-token splitting as the tokenizer's. None otherwise."""
    try:
        from transformers import PreTrainedTokenizerFast
    except ImportError:
        return None
    if not isinstance(tokenizer, PreTrainedTokenizerFast) or _checks_left(tokenizer) in (-1, None):
        return None
    kind, instance = type(tokenizer), getattr(tokenizer, "__dict__", {})
    for name in _ENCODE_PATH:
        own = getattr(PreTrainedTokenizerFast, name, None)
        if name in instance or getattr(kind, name, None) is not own:
            return None
    backend = getattr(tokenizer, "_tokenizer", None)
    try:
        if (
            backend is None
            or backend.truncation is not None
            or backend.padding is not None
            or backend.encode_special_tokens != bool(tokenizer.split_special_tokens)
        ):
            return None
    except AttributeError:
        return None
    return getattr(backend, "encode_batch_fast", None) or getattr(backend, "encode_batch", None)


def batch_token_ids(
    tokenizer: Any, texts: Sequence[str], add_special_tokens: bool = True
) -> list[list[int]]:
    """``tokenizer(list(texts), add_special_tokens=...)["input_ids"]``. For transformers'
    own fast tokenizer class the ids come straight from its Rust backend
    (``encode_batch_fast``: no offsets, no per-text dicts; about a third less time on a
    collate batch), the first :data:`SELF_CHECKS` calls per tokenizer compared with the
    tokenizer's own call (a difference turns the direct path off for it, logged once).
    Anything else calls the tokenizer."""
    texts = list(texts)
    encode = _direct_encoder(tokenizer) if texts else None
    if encode is None:
        return tokenizer(texts, add_special_tokens=add_special_tokens)["input_ids"]
    ids = [e.ids for e in encode(texts, add_special_tokens=add_special_tokens)]
    left = _checks_left(tokenizer)
    if left is None or left > 0:
        expected = tokenizer(texts, add_special_tokens=add_special_tokens)["input_ids"]
        with _state_lock:
            current = _direct_state.get(tokenizer, -1)
            if ids != expected:
                _direct_state[tokenizer] = -1
            elif current > 0:  # another thread may have turned it off meanwhile
                _direct_state[tokenizer] = current - 1
        if ids != expected:
            logger.warning(
                "%s: its Rust backend's ids differ from tokenizer(texts)'s; vlm_collate calls "
                "the tokenizer from now on",
                type(tokenizer).__name__,
            )
            return expected
    return ids
