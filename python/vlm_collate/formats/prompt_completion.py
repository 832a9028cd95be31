"""TRL prompt/completion rows: ``prompt`` and ``completion``, each a string or a list of
messages, with an optional ``images`` column (TRL's vision prompt/completion datasets).

Message lists are read as :mod:`.messages` reads them (the media columns fill the
data-less image items, or the text's tags); string halves become one user and one
assistant message, the images opening the user message (as TRL's
``prepare_multimodal_messages`` places them). The row is labelled on the completion, as
TRL's ``completion_only_loss``: an assistant message of the prompt gets ``train: False``
unless it carries its own ``train``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import SampleError
from .content import checked, is_list, media_columns, tag_counts
from .messages import with_column_media
from .rows import where

KEYS = ("prompt", "completion")


def matches(example: Mapping[str, Any]) -> bool:
    """Both ``prompt`` and ``completion`` present."""
    return all(example.get(k) is not None for k in KEYS)


def _half(value: Any, role: str, key: str, index: int, example: Any) -> list[dict[str, Any]]:
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if is_list(value):
        return checked(value, key, index, example)
    raise SampleError(
        f"{where(index, example)}: {key!r} must be a string or a list of messages, got "
        f"{type(value).__name__}"
    )


def conversation(example: Mapping[str, Any], index: int) -> list[dict[str, Any]]:
    """The prompt's messages then the completion's, with the media placed."""
    for key in KEYS:
        if example.get(key) is None:
            raise SampleError(f"{where(index, example)}: missing {key!r}")
    prompt = _half(example["prompt"], "user", "prompt", index, example)
    # Labelled on the completion (TRL's completion_only_loss): a prompt's replies are context.
    prompt = [
        {**m, "train": False} if m.get("role") == "assistant" and "train" not in m else m
        for m in prompt
    ]
    completion = _half(example["completion"], "assistant", "completion", index, example)
    messages = prompt + completion
    if isinstance(example["prompt"], str):
        columns = media_columns(example, index)
        tags = tag_counts(messages)
        leading = [
            {"type": kind, kind: value}
            for kind, (_, values) in columns.items()
            if not tags[kind]
            for value in values
        ]
        if leading:
            messages[0] = {
                **messages[0],
                "content": [*leading, {"type": "text", "text": messages[0]["content"]}],
            }
            rest = {k: v for k, v in example.items() if k not in _media_keys(columns, tags)}
            return with_column_media(messages, rest, index)
    return with_column_media(messages, example, index)


def _media_keys(columns: Mapping[str, tuple[str, list[Any]]], tags: Mapping[str, int]) -> set:
    return {column for kind, (column, _) in columns.items() if not tags[kind]}
