"""The conversation form and what reads it: a row of any published format in
(:func:`conversation_of`, see :mod:`.detect`), text and assistant turns out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .content import CONTENT_TYPES, MEDIA_TYPES, Conversation, Message
from .detect import conversation_of, conversations_of, format_of

__all__ = [
    "CONTENT_TYPES",
    "IMAGE_COLUMNS",
    "MEDIA_TYPES",
    "Conversation",
    "Message",
    "assistant_turns",
    "conversation_of",
    "conversations_of",
    "extract_assistant_text",
    "format_of",
    "with_list_content",
]

CONVERSATION_KEYS = ("conversation", "messages")
"""Where a TRL-shaped example keeps its messages: ours (the seed's) or Hugging Face's."""

IMAGE_COLUMNS = ("images", "image")
"""TRL's columns of images for the ``{"type": "image"}`` placeholders, in order."""


def extract_assistant_text(message: Message) -> str:
    """The text of a message: the string itself, or its text items joined."""
    content = message.get("content", "")
    if isinstance(content, str):
        return content
    if content is None:
        return ""
    return "".join(
        item.get("text", "")
        for item in content
        if isinstance(item, Mapping) and item.get("type") == "text"
    )


def assistant_turns(conversation: Conversation) -> list[Message]:
    """The assistant messages of a conversation, in order."""
    return [m for m in conversation if m.get("role") == "assistant"]


def with_list_content(conversation: Conversation) -> list[dict[str, Any]]:
    """The conversation with every non-empty string content turned into one text item,
    the form multimodal processors' chat templates expect. An empty string stays one:
    templates test ``message.content`` for truth (Qwen3-VL's, beside ``tool_calls``), and a
    one-item list would be true where the template, given the message, sees a false one."""
    return [
        {**m, "content": [{"type": "text", "text": m["content"]}]}
        if isinstance(m["content"], str) and m["content"]
        else dict(m)
        for m in conversation
    ]
