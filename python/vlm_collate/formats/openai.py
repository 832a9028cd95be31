"""OpenAI chat rows (the Chat Completions and fine-tuning format): ``messages`` whose
content is a string, ``None`` (an assistant turn that only calls tools), or a list of
``text``, ``image_url`` (``{"url": "data:..." | path | URL}``), ``input_audio``
(``{"data": base64, "format": "wav"}``) and ``video_url`` parts; assistant
``tool_calls`` and ``tool`` messages (with ``tool_call_id``) are kept for the template.

Parts become the conversation form's items (``image``, ``audio``, ``video``); a message's
other fields (``tool_calls``, ``tool_call_id``, ``name``) pass through; ``content: None``
becomes ``""``, which every chat template renders as it renders a missing content."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import SampleError
from .content import check_message, is_list, is_mapping
from .messages import with_column_media
from .rows import where

KEY = "messages"
PARTS = {"image_url": "image", "input_audio": "audio", "video_url": "video"}
"""OpenAI content part types and the media kind each becomes."""


def matches(example: Mapping[str, Any]) -> bool:
    """``messages`` with an OpenAI part, ``tool_calls`` or a ``None`` content."""
    messages = example.get(KEY)
    if not is_list(messages):
        return False
    for message in messages:
        if not is_mapping(message):
            continue
        content = message.get("content")
        if message.get("tool_calls") is not None or ("content" in message and content is None):
            return True
        if is_list(content) and any(
            is_mapping(part) and part.get("type") in PARTS for part in content
        ):
            return True
    return False


def _part(part: Any, at: str) -> Any:
    if not isinstance(part, Mapping) or part.get("type") not in PARTS:
        return part  # text and media items of the conversation form are checked later
    kind = PARTS[part["type"]]
    value = part.get(part["type"])
    if kind == "audio":
        if not isinstance(value, Mapping) or not isinstance(value.get("data"), str):
            raise SampleError(f"{at}: an input_audio part needs {{'data': base64, 'format': ...}}")
        return {"type": "audio", "audio": value["data"]}
    url = value.get("url") if isinstance(value, Mapping) else value
    if not isinstance(url, str):
        raise SampleError(f"{at}: an {part['type']} part needs {{'url': ...}}")
    return {"type": kind, kind: url}


def conversation(example: Mapping[str, Any], index: int) -> list[dict[str, Any]]:
    """The row's messages in the conversation form."""
    messages = example.get(KEY)
    if not is_list(messages) or not messages:
        raise SampleError(f"{where(index, example)}: '{KEY}' must be a non-empty list of messages")
    out = []
    for turn, message in enumerate(messages):
        at = f"{where(index, example)}, message {turn}"
        if not isinstance(message, Mapping):
            raise SampleError(f"{at}: a message must be a dict, got {type(message).__name__}")
        message = dict(message)
        content = message.get("content")
        if content is None:
            message["content"] = ""
        elif is_list(content):
            message["content"] = [_part(p, f"{at}, item {k}") for k, p in enumerate(content)]
        check_message(message, index, turn, example)
        out.append(message)
    return with_column_media(out, example, index)
