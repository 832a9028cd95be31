"""The Cauldron (HuggingFaceM4/the_cauldron, Idefics2/3 and SmolVLM training data):
``images`` (a list) and ``texts``, a list of ``{"user", "assistant", "source"}`` turns.
The images open the first user turn, before its text, as Idefics2's and SmolVLM's
fine-tuning recipes place them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import SampleError
from .content import is_list, media_columns
from .rows import where

KEY = "texts"


def matches(example: Mapping[str, Any]) -> bool:
    """A ``texts`` list of ``{"user", "assistant"}`` dicts."""
    texts = example.get(KEY)
    return (
        is_list(texts)
        and bool(texts)
        and isinstance(texts[0], Mapping)
        and "user" in texts[0]
        and "assistant" in texts[0]
    )


def conversation(example: Mapping[str, Any], index: int) -> list[dict[str, Any]]:
    """One user and one assistant message per ``texts`` entry; the images first."""
    texts = example.get(KEY)
    if not is_list(texts) or not texts:
        raise SampleError(f"{where(index, example)}: '{KEY}' must be a non-empty list")
    columns = media_columns(example, index)
    media = [
        {"type": kind, kind: value} for kind, (_, values) in columns.items() for value in values
    ]
    messages: list[dict[str, Any]] = []
    for turn, pair in enumerate(texts):
        at = f"{where(index, example)}, texts {turn}"
        if not isinstance(pair, Mapping):
            raise SampleError(f"{at}: a Cauldron turn is a dict with 'user' and 'assistant'")
        for role in ("user", "assistant"):
            if not isinstance(pair.get(role), str):
                raise SampleError(f"{at}: '{role}' must be a string")
        user: Any = pair["user"]
        if turn == 0 and media:
            user = [*media, {"type": "text", "text": pair["user"]}]
        messages.append({"role": "user", "content": user})
        messages.append({"role": "assistant", "content": pair["assistant"]})
    return messages
