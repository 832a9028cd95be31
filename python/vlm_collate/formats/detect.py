"""Which published format a row is in, and its conversation.

``format="auto"`` (the default) detects the format per row, in the order of
:data:`FORMATS`; a named format reads every row as that one. A row that matches none
gets an error listing the formats and the keys each would need."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from ..errors import SampleError
from ..options import FORMAT_NAMES
from . import cauldron, messages, openai, prompt_completion, sharegpt
from .content import is_mapping
from .rows import where


class Format(NamedTuple):
    """A published row shape: its name, a test, its converter and the keys it needs."""

    name: str
    matches: Callable[[Mapping[str, Any]], bool]
    conversation: Callable[[Mapping[str, Any], int], list[dict[str, Any]]]
    needs: str


FORMATS = (
    Format("sharegpt", sharegpt.matches, sharegpt.conversation, "'conversations' of {from, value}"),
    Format("cauldron", cauldron.matches, cauldron.conversation, "'texts' of {user, assistant}"),
    Format(
        "prompt_completion",
        prompt_completion.matches,
        prompt_completion.conversation,
        "'prompt' and 'completion'",
    ),
    Format("openai", openai.matches, openai.conversation, "'messages' with OpenAI parts"),
    Format("messages", messages.matches, messages.conversation, "'messages' or 'conversation'"),
)
"""Every format, in the order detection tries them."""

ALIASES = {"llava": "sharegpt", "trl": "messages", "hf": "messages"}
"""Other names of a format."""

_BY_NAME = {f.name: f for f in FORMATS}
assert set(FORMAT_NAMES) == {"auto", *_BY_NAME, *ALIASES}, "options.FORMAT_NAMES drifted"


def format_of(example: Any, index: int = 0) -> str:
    """The name of the format ``example`` is in (a :class:`SampleError` if none)."""
    return _detected(example, index).name


def _detected(example: Any, index: int) -> Format:
    if not is_mapping(example):
        raise SampleError(
            f"{where(index)}: an example must be a dict, got {type(example).__name__}"
        )
    for fmt in FORMATS:
        if fmt.matches(example):
            return fmt
    keys = sorted(map(str, example))
    needs = "; ".join(f"{f.name}: {f.needs}" for f in FORMATS)
    raise SampleError(
        f"{where(index, example)}: missing 'conversation' or 'messages', and matches no other "
        f"known format (its keys: {keys}); each format needs: {needs} (see docs/formats.md)"
    )


def conversation_of(example: Any, index: int, format: str = "auto") -> list[dict[str, Any]]:
    """The conversation of ``example`` (sample ``index`` of its batch): a list of
    ``{"role", "content"}`` messages whose media items carry their data."""
    if format == "auto":
        return _detected(example, index).conversation(example, index)
    fmt = _BY_NAME.get(ALIASES.get(format, format))
    if fmt is None:
        raise SampleError(f"unknown format {format!r}; expected one of {FORMAT_NAMES}")
    if not is_mapping(example):
        raise SampleError(
            f"{where(index)}: an example must be a dict, got {type(example).__name__}"
        )
    if not fmt.matches(example) and fmt.name != "openai":
        raise SampleError(
            f"{where(index, example)}: is not a {format!r} row: it needs {fmt.needs} "
            f"(its keys: {sorted(map(str, example))})"
        )
    return fmt.conversation(example, index)


def conversations_of(examples: Sequence[Any], format: str = "auto") -> list[list[dict[str, Any]]]:
    """The conversations of a batch of rows (see :func:`conversation_of`)."""
    if not isinstance(examples, Sequence) or len(examples) == 0:
        raise SampleError("a batch must be a non-empty list of examples")
    return [conversation_of(example, i, format) for i, example in enumerate(examples)]
