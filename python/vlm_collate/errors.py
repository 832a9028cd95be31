"""The library's errors: one base class users can catch, and the few kinds they tell apart.

Every class derives from ``ValueError`` (through :class:`CollateError`), so code that
caught ``ValueError`` before keeps working. Messages name the sample (its index in the
batch), the message and item where one is at fault, and what to do.
"""

from __future__ import annotations


class CollateError(ValueError):
    """A batch could not be built; the message says which sample and what to do."""


class SampleError(CollateError):
    """A sample's data is malformed: its conversation, messages, content items or
    media counts."""


class MediaError(SampleError):
    """A media item (image, video, audio) cannot be loaded or processed."""


class SampleTooLongError(SampleError):
    """A sample is longer than ``max_length`` and ``on_overflow="error"``."""


class TemplateError(CollateError):
    """The chat template cannot be used to build labels (it renders no assistant reply,
    or a turn shape it cannot label)."""


class OptionError(CollateError):
    """A collate option has a wrong type or value (raised when the collator is built)."""


class EngineError(CollateError):
    """A refusal of the Rust engine: an argument's shape, dtype, size or value (the
    message names the argument and the numbers)."""


__all__ = [
    "CollateError",
    "EngineError",
    "MediaError",
    "OptionError",
    "SampleError",
    "SampleTooLongError",
    "TemplateError",
]
