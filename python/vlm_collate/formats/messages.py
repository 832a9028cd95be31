"""Hugging Face / TRL ``messages`` (or ours, ``conversation``): ``{"role", "content"}``
messages whose content is a string or a list of ``text``/``image``/``video``/``audio``
items. Media columns (``images``, ``videos``, ``audios`` or their singular names) fill the
items that carry no data, in order (TRL); where the messages have no such items, the
columns fill ``<image>``/``<video>``/``<audio>`` tags in the text, in order (ms-swift,
LLaMA-Factory)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import SampleError
from .content import checked, has_data, media_columns, tag_counts, with_tagged_media
from .rows import where

KEYS = ("conversation", "messages", "conversations")
"""Where a row keeps its messages: ours (the seed's), Hugging Face's and TRL's, or
``conversations`` of ``{"role", "content"}`` messages (LLaMA-Factory's openai-style)."""


def matches(example: Mapping[str, Any]) -> bool:
    """A ``messages``/``conversation`` row (OpenAI rows are tried first by detection)."""
    return any(example.get(k) is not None for k in KEYS)


def conversation(example: Mapping[str, Any], index: int) -> list[dict[str, Any]]:
    """The row's messages, validated, with its media columns placed."""
    present = [k for k in KEYS if example.get(k) is not None]
    if not present:
        raise SampleError(
            f"{where(index, example)}: missing 'conversation' or 'messages' (keys: "
            f"{sorted(map(str, example))}); each example needs "
            "{'messages': [{'role': ..., 'content': ...}, ...]}"
        )
    if len(present) > 1:
        raise SampleError(
            f"{where(index, example)}: has both {present[0]!r} and {present[1]!r}; keep one of them"
        )
    messages = checked(example[present[0]], present[0], index, example)
    return with_column_media(messages, example, index)


def with_column_media(
    messages: list[dict[str, Any]], example: Mapping[str, Any], index: int
) -> list[dict[str, Any]]:
    """``messages`` with the row's media columns placed: into the data-less media items
    of each kind when there are any (their count must match), else into the text's tags.
    An audio column with neither is left in the row for the family (Phi-4-multimodal
    places ``example["audio"]`` at its own placeholders); the other collators refuse it
    (:func:`..pipeline.encode.unplaced_columns`)."""
    columns = media_columns(example, index)
    tagged = {}
    for kind, (column, values) in columns.items():
        slots = [
            (turn, k)
            for turn, m in enumerate(messages)
            if not isinstance(m["content"], str)
            for k, item in enumerate(m["content"])
            if item.get("type") == kind and not has_data(item, kind)
        ]
        if not slots:
            if kind == "audio" and not tag_counts(messages)[kind]:
                continue  # left to the family (Phi-4 reads example["audio"])
            tagged[kind] = (column, values)
            continue
        if len(slots) != len(values):
            raise SampleError(
                f"{where(index, example)}: its {column!r} column holds {len(values)} {kind}(s) "
                f"but its messages have {len(slots)} {{'type': '{kind}'}} placeholder(s) "
                f"without data; put one placeholder per {kind}, in order, in the message content"
            )
        for (turn, k), value in zip(slots, values):
            content = list(messages[turn]["content"])
            content[k] = {**content[k], kind: value}
            messages[turn] = {**messages[turn], "content": content}
    return with_tagged_media(messages, tagged, example, index)
