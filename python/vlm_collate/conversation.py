"""Examples and conversations: validation and text extraction."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .errors import SampleError

MEDIA_TYPES = ("image", "video", "audio")
CONTENT_TYPES = ("text", *MEDIA_TYPES)
Message = Mapping[str, Any]
Conversation = Sequence[Message]


def conversation_of(example: Any, index: int) -> list[dict[str, Any]]:
    """The validated conversation of ``example`` (the ``index``-th of its batch)."""
    if not isinstance(example, Mapping):
        raise SampleError(
            f"sample {index}: an example must be a dict, got {type(example).__name__}"
        )
    if "conversation" not in example:
        raise SampleError(
            f"sample {index}: missing 'conversation' (keys: {sorted(map(str, example))}); "
            "each example needs {'conversation': [{'role': ..., 'content': ...}, ...]}"
        )
    conversation = example["conversation"]
    if not isinstance(conversation, Sequence) or isinstance(conversation, (str, bytes)):
        raise SampleError(
            f"sample {index}: 'conversation' must be a list of messages, "
            f"got {type(conversation).__name__}"
        )
    if len(conversation) == 0:
        raise SampleError(f"sample {index}: 'conversation' is empty")
    for turn, message in enumerate(conversation):
        _check_message(message, index, turn)
    return [dict(m) for m in conversation]


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
    """Validated conversations of a batch of examples."""
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


def rendered_texts(
    processor: Any, conversations: Sequence[Conversation], **template_kwargs
) -> list[str]:
    """Each conversation rendered by the processor's chat template (list content,
    no generation prompt)."""
    return [
        processor.apply_chat_template(
            with_list_content(c), tokenize=False, add_generation_prompt=False, **template_kwargs
        )
        for c in conversations
    ]
