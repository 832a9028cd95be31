"""Examples and conversations: validation and text extraction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import SampleError

MEDIA_TYPES = ("image", "video", "audio")
CONTENT_TYPES = ("text", *MEDIA_TYPES)
Message = Mapping[str, Any]
Conversation = Sequence[Message]


CONVERSATION_KEYS = ("conversation", "messages")
"""Where an example keeps its messages: ours (the seed's) or Hugging Face's and TRL's."""

IMAGE_COLUMNS = ("images", "image")
"""TRL's columns of images for the ``{"type": "image"}`` placeholders, in order."""

_MEDIA_DATA_KEYS = ("path", "url", "data")


def conversation_of(example: Any, index: int) -> list[dict[str, Any]]:
    """The validated conversation of ``example`` (the ``index``-th of its batch), from
    ``conversation`` or ``messages``, with the images of an ``images`` (or ``image``)
    column attached in order to the image items that carry no data."""
    if not isinstance(example, Mapping):
        raise SampleError(
            f"sample {index}: an example must be a dict, got {type(example).__name__}"
        )
    present = [k for k in CONVERSATION_KEYS if example.get(k) is not None]
    if not present:
        raise SampleError(
            f"sample {index}: missing 'conversation' or 'messages' (keys: "
            f"{sorted(map(str, example))}); each example needs "
            "{'messages': [{'role': ..., 'content': ...}, ...]}"
        )
    if len(present) > 1:
        raise SampleError(
            f"sample {index}: has both 'conversation' and 'messages'; keep one of them"
        )
    key = present[0]
    conversation = example[key]
    if not isinstance(conversation, Sequence) or isinstance(conversation, (str, bytes)):
        raise SampleError(
            f"sample {index}: '{key}' must be a list of messages, got {type(conversation).__name__}"
        )
    if len(conversation) == 0:
        raise SampleError(f"sample {index}: '{key}' is empty")
    for turn, message in enumerate(conversation):
        _check_message(message, index, turn)
    messages = [dict(m) for m in conversation]
    column = next((c for c in IMAGE_COLUMNS if example.get(c) is not None), None)
    if column is not None:
        messages = _with_column_images(messages, example[column], column, index)
    return messages


def _has_data(item: Mapping[str, Any], kind: str) -> bool:
    return any(item.get(key) is not None for key in (kind, f"{kind}_url", *_MEDIA_DATA_KEYS))


def _with_column_images(
    messages: list[dict[str, Any]], images: Any, column: str, index: int
) -> list[dict[str, Any]]:
    """``messages`` with ``images`` (TRL's column) placed, in order, into the image
    items that carry no data; the two counts must match."""
    if column == "image" or not isinstance(images, Sequence) or isinstance(images, (str, bytes)):
        images = [images]
    slots = [
        (turn, k)
        for turn, m in enumerate(messages)
        if not isinstance(m["content"], str)
        for k, item in enumerate(m["content"])
        if item.get("type") == "image" and not _has_data(item, "image")
    ]
    if len(slots) != len(images):
        raise SampleError(
            f"sample {index}: its '{column}' column holds {len(images)} image(s) but its "
            f"messages have {len(slots)} {{'type': 'image'}} placeholder(s) without data; "
            "put one placeholder per image, in order, in the message content"
        )
    for (turn, k), image in zip(slots, images):
        content = list(messages[turn]["content"])
        content[k] = {**content[k], "image": image}
        messages[turn] = {**messages[turn], "content": content}
    return messages


def _check_message(message: Any, index: int, turn: int) -> None:
    where = f"sample {index}, message {turn}"
    if not isinstance(message, Mapping):
        raise SampleError(f"{where}: a message must be a dict, got {type(message).__name__}")
    for field in ("role", "content"):
        if field not in message:
            raise SampleError(f"{where}: missing '{field}'")
    if not isinstance(message["role"], str):
        raise SampleError(f"{where}: 'role' must be a string, got {type(message['role']).__name__}")
    content = message["content"]
    if isinstance(content, str):
        return
    if not isinstance(content, Sequence) or isinstance(content, bytes):
        raise SampleError(
            f"{where}: 'content' must be a string or a list of items, got {type(content).__name__}"
        )
    for k, item in enumerate(content):
        if not isinstance(item, Mapping) or item.get("type") not in CONTENT_TYPES:
            kind = item.get("type") if isinstance(item, Mapping) else type(item).__name__
            raise SampleError(
                f"{where}, item {k}: unknown content item {kind!r}; "
                f"expected a dict with 'type' in {CONTENT_TYPES}"
            )
        if item["type"] == "text" and not isinstance(item.get("text"), str):
            raise SampleError(f"{where}, item {k}: a text item needs a string 'text'")


def conversations_of(examples: Sequence[Any]) -> list[list[dict[str, Any]]]:
    """Validated conversations of a batch of examples (see :func:`conversation_of`)."""
    if not isinstance(examples, Sequence) or len(examples) == 0:
        raise SampleError("a batch must be a non-empty list of examples")
    return [conversation_of(example, i) for i, example in enumerate(examples)]


def extract_assistant_text(message: Message) -> str:
    """The text of a message: the string itself, or its text items joined."""
    content = message.get("content", "")
    if isinstance(content, str):
        return content
    return "".join(
        item.get("text", "")
        for item in content
        if isinstance(item, Mapping) and item.get("type") == "text"
    )


def assistant_turns(conversation: Conversation) -> list[Message]:
    """The assistant messages of a conversation, in order."""
    return [m for m in conversation if m.get("role") == "assistant"]


def with_list_content(conversation: Conversation) -> list[dict[str, Any]]:
    """The conversation with every string content turned into one text item,
    the form multimodal processors' chat templates expect."""
    return [
        {**m, "content": [{"type": "text", "text": m["content"]}]}
        if isinstance(m["content"], str)
        else dict(m)
        for m in conversation
    ]
