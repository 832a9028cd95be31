"""The one conversation form every format converts to, and what the converters share:
message validation, media columns, ``<image>``/``<video>``/``<audio>`` tags."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import SampleError
from .rows import where

MEDIA_TYPES = ("image", "video", "audio")
CONTENT_TYPES = ("text", *MEDIA_TYPES)
Message = Mapping[str, Any]
Conversation = Sequence[Message]

MEDIA_COLUMNS = {
    "image": ("images", "image"),
    "video": ("videos", "video"),
    "audio": ("audios", "audio"),
}
"""Per media kind, the row columns that carry its media (a value or a list of values),
as TRL, LLaVA, ShareGPT4V, LLaMA-Factory and ms-swift name them."""

TAGS = {"<image>": "image", "<video>": "video", "<audio>": "audio"}
"""Media tags in message text (LLaVA, LLaMA-Factory, ms-swift) and their kinds."""
TAG_PATTERN = re.compile("|".join(map(re.escape, TAGS)))

_MEDIA_DATA_KEYS = ("path", "url", "data")


def is_list(value: Any) -> bool:
    """A sequence that is not a string or bytes."""
    kind = type(value)  # the common cases, without the ABC check
    if kind is list or kind is tuple:
        return True
    if kind is str or kind is dict or value is None:
        return False
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes))


def is_mapping(value: Any) -> bool:
    """A mapping (a dict, the common case, without the ABC check)."""
    return type(value) is dict or isinstance(value, Mapping)


def is_waveform_pair(value: Any) -> bool:
    """One audio given as an ``(array, sampling_rate)`` pair (not a list of two audios)."""
    return (
        is_list(value)
        and len(value) == 2
        and isinstance(value[1], (int, float))
        and not isinstance(value[1], bool)
        and not isinstance(value[0], (int, float, str, bytes, Mapping))
    )


def has_data(item: Mapping[str, Any], kind: str) -> bool:
    """Whether a media content item carries its data."""
    return any(item.get(key) is not None for key in (kind, f"{kind}_url", *_MEDIA_DATA_KEYS))


def media_columns(example: Mapping[str, Any], index: int) -> dict[str, tuple[str, list[Any]]]:
    """Per media kind the row carries: the column's name and its values as a list (a
    single value, such as LLaVA's ``"image": "coco/0001.jpg"``, is one item)."""
    found: dict[str, tuple[str, list[Any]]] = {}
    for kind, columns in MEDIA_COLUMNS.items():
        present = [c for c in columns if example.get(c) is not None]
        if len(present) > 1:
            raise SampleError(
                f"{where(index, example)}: has both {present[0]!r} and {present[1]!r} "
                f"columns; keep one list of {kind}s"
            )
        if present:
            values = example[present[0]]
            one = not is_list(values) or (kind == "audio" and is_waveform_pair(values))
            values = [values] if one else list(values)
            if values:
                found[kind] = (present[0], values)
    return found


def tag_counts(messages: Sequence[Message]) -> dict[str, int]:
    """How many ``<image>``/``<video>``/``<audio>`` tags the messages' text holds, per kind."""
    counts = dict.fromkeys(MEDIA_TYPES, 0)
    for message in messages:
        for text in texts_of(message.get("content")):
            if "<" not in text:
                continue
            for tag in TAG_PATTERN.findall(text):
                counts[TAGS[tag]] += 1
    return counts


def texts_of(content: Any) -> list[str]:
    """The text strings of a message content (a string, or the text items of a list)."""
    if isinstance(content, str):
        return [content]
    if is_list(content):
        return [
            i["text"]
            for i in content
            if isinstance(i, Mapping) and i.get("type") == "text" and isinstance(i.get("text"), str)
        ]
    return []


def split_tags(content: Any, kinds: Sequence[str], queues: dict[str, list[Any]]) -> Any:
    """``content`` with each tag of ``kinds`` in its text replaced by a media item taking
    the next value of that kind's queue (text around the tags kept as it is, empty
    pieces left out). Content without such tags is returned unchanged (a string stays a
    string)."""
    if isinstance(content, str) and "<" not in content:
        return content  # no tag (the common case: most messages of a tagged row)
    items = [{"type": "text", "text": content}] if isinstance(content, str) else content
    if not is_list(items):
        return content
    out: list[Any] = []
    changed = False
    for item in items:
        text = (
            item.get("text") if isinstance(item, Mapping) and item.get("type") == "text" else None
        )
        if not isinstance(text, str):
            out.append(item)
            continue
        start = 0
        for found in TAG_PATTERN.finditer(text):
            kind = TAGS[found.group(0)]
            if kind not in kinds:
                continue
            if found.start() > start:
                out.append({"type": "text", "text": text[start : found.start()]})
            out.append({"type": kind, kind: queues[kind].pop(0)})
            start = found.end()
            changed = True
        if start == 0:
            out.append(item)
        elif start < len(text):
            out.append({"type": "text", "text": text[start:]})
    return out if changed else content


def with_tagged_media(
    messages: list[dict[str, Any]],
    columns: Mapping[str, tuple[str, list[Any]]],
    example: Mapping[str, Any],
    index: int,
) -> list[dict[str, Any]]:
    """``messages`` whose tags take the media of the row's columns, in order; each kind's
    tag count must equal its media count (a mismatch names the row and both counts)."""
    if not columns:
        return messages
    tags = tag_counts(messages)
    for kind, (column, values) in columns.items():
        if tags[kind] != len(values):
            raise SampleError(
                f"{where(index, example)}: its text holds {tags[kind]} <{kind}> tag(s) but its "
                f"{column!r} column holds {len(values)} {kind}(s); put one <{kind}> tag per "
                f"{kind}, in order, where it belongs in the text"
            )
    queues = {kind: list(values) for kind, (_, values) in columns.items()}
    return [{**m, "content": split_tags(m.get("content"), list(columns), queues)} for m in messages]


def check_message(message: Any, index: int, turn: int, example: Any = None) -> None:
    """Raises a SampleError naming the row and message unless ``message`` is a
    ``{"role": str, "content": str | [items]}`` dict of the conversation form."""
    if is_mapping(message) and isinstance(message.get("role"), str):
        content = message.get("content")
        if isinstance(content, str) and "content" in message:
            return
        if is_list(content) and all(_valid_item(item) for item in content):
            return
    _raise_for_message(message, index, turn, example)


def _valid_item(item: Any) -> bool:
    return (
        is_mapping(item)
        and item.get("type") in CONTENT_TYPES
        and (item["type"] != "text" or isinstance(item.get("text"), str))
    )


def _raise_for_message(message: Any, index: int, turn: int, example: Any) -> None:
    """The SampleError of a message :func:`check_message` refuses, naming what is wrong."""
    at = f"{where(index, example)}, message {turn}"
    if not isinstance(message, Mapping):
        raise SampleError(f"{at}: a message must be a dict, got {type(message).__name__}")
    for name in ("role", "content"):
        if name not in message:
            raise SampleError(f"{at}: missing '{name}'")
    if not isinstance(message["role"], str):
        raise SampleError(f"{at}: 'role' must be a string, got {type(message['role']).__name__}")
    content = message["content"]
    if isinstance(content, str):
        return
    if not is_list(content):
        raise SampleError(
            f"{at}: 'content' must be a string or a list of items, got {type(content).__name__}"
        )
    for k, item in enumerate(content):
        if not isinstance(item, Mapping) or item.get("type") not in CONTENT_TYPES:
            kind = item.get("type") if isinstance(item, Mapping) else type(item).__name__
            raise SampleError(
                f"{at}, item {k}: unknown content item {kind!r}; "
                f"expected a dict with 'type' in {CONTENT_TYPES}"
            )
        if item["type"] == "text" and not isinstance(item.get("text"), str):
            raise SampleError(f"{at}, item {k}: a text item needs a string 'text'")


def checked(messages: Any, key: str, index: int, example: Any = None) -> list[dict[str, Any]]:
    """``messages`` (the row's ``key``) validated and copied: a non-empty list of messages."""
    if not is_list(messages):
        raise SampleError(
            f"{where(index, example)}: '{key}' must be a list of messages, got "
            f"{type(messages).__name__}"
        )
    if len(messages) == 0:
        raise SampleError(f"{where(index, example)}: '{key}' is empty")
    for turn, message in enumerate(messages):
        check_message(message, index, turn, example)
    return [dict(m) for m in messages]
