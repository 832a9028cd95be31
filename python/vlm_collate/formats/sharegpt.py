"""LLaVA / ShareGPT rows: ``conversations`` of ``{"from", "value"}`` turns whose text holds
``<image>``/``<video>``/``<audio>`` tags, the media in ``image``/``images``/``video``/
``videos``/``audio``/``audios`` (one value or a list), and an optional ``system`` string
(LLaVA-Instruct-150K, ShareGPT4V, LLaVA-OneVision-Data, LLaMA-Factory's sharegpt format).

Roles: ``human``/``user`` -> user, ``gpt``/``assistant``/``function_call`` -> assistant
(a ``function_call`` turn's text is the call as the dataset wrote it), ``system`` ->
system, ``tool``/``function``/``observation`` -> tool. Text-only turns keep string
content; a turn with tags becomes a list of text and media items in the text's order."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import SampleError
from .content import check_message, is_list, media_columns, with_tagged_media
from .rows import where

KEY = "conversations"
ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "function_call": "assistant",
    "system": "system",
    "tool": "tool",
    "function": "tool",
    "observation": "tool",
}


def matches(example: Mapping[str, Any]) -> bool:
    """A ``conversations`` list whose first turn has ``from``."""
    turns = example.get(KEY)
    return is_list(turns) and bool(turns) and isinstance(turns[0], Mapping) and "from" in turns[0]


def conversation(example: Mapping[str, Any], index: int) -> list[dict[str, Any]]:
    """The row's turns as messages, with its media in place of its tags."""
    turns = example.get(KEY)
    if not is_list(turns) or not turns:
        raise SampleError(f"{where(index, example)}: '{KEY}' must be a non-empty list of turns")
    messages: list[dict[str, Any]] = []
    system = example.get("system")
    if isinstance(system, str) and system:
        messages.append({"role": "system", "content": system})
    for turn, value in enumerate(turns):
        if (
            isinstance(value, Mapping)
            and isinstance(value.get("value"), str)
            and (role := ROLES.get(str(value.get("from")).lower())) is not None
            and "from" in value
        ):
            messages.append({"role": role, "content": value["value"]})
            continue
        at = f"{where(index, example)}, turn {turn}"
        if not isinstance(value, Mapping) or "from" not in value or "value" not in value:
            raise SampleError(f"{at}: a ShareGPT turn is a dict with 'from' and 'value'")
        role = ROLES.get(str(value["from"]).lower())
        if role is None:
            raise SampleError(
                f"{at}: unknown 'from' {value['from']!r}; expected one of {sorted(ROLES)}"
            )
        if not isinstance(value["value"], str):
            raise SampleError(
                f"{at}: 'value' must be a string, got {type(value['value']).__name__}"
            )
        messages.append({"role": role, "content": value["value"]})
    for turn, message in enumerate(messages):
        check_message(message, index, turn, example)
    return with_tagged_media(messages, media_columns(example, index), example, index)
