"""Collate options: one typed dataclass, every value checked when it is built."""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .engine import IGNORE_INDEX
from .errors import OptionError

OnOverflow = Literal["error", "drop", "truncate"]
OnUnlabeled = Literal["warn", "raise", "drop"]
PaddingSide = Literal["right", "left"]
ReturnTensors = Literal["pt", "np"]
OnSpecialText = Literal["escape", "error", "keep"]
FORMAT_NAMES = (
    "auto",
    "messages",
    "sharegpt",
    "llava",
    "openai",
    "cauldron",
    "prompt_completion",
    "trl",
    "hf",
)
"""The ``format`` values: ``"auto"`` (detected per row) or a published row shape
(see docs/formats.md; ``llava`` is ``sharegpt``, ``trl``/``hf`` are ``messages``)."""

SEED_SHIFT = True
"""The default ``shift`` of the seed-named collate functions and of
:class:`~vlm_collate.PackedCollator`: pre-shifted, as the seed (``CollateOptions`` and
:class:`~vlm_collate.VLMCollator` default to ``False``, Hugging Face style)."""

MAX_COLUMNS = 1 << 28
"""The longest row a batch can hold: the engine's limit on the values of one array."""

MAX_PIXELS = 1 << 40
"""The largest image budget (``min_pixels``, ``max_pixels``) accepted."""

_CHOICES: dict[str, tuple[str, ...]] = {
    "on_overflow": ("error", "drop", "truncate"),
    "on_unlabeled": ("warn", "raise", "drop"),
    "padding_side": ("right", "left"),
    "return_tensors": ("pt", "np"),
    "on_special_text": ("escape", "error", "keep"),
    "reasoning": ("label", "exclude"),
    "format": FORMAT_NAMES,
}


@dataclass(frozen=True)
class CollateOptions:
    """Options every collate function accepts, validated at construction
    (a wrong type or value is an :class:`~vlm_collate.errors.OptionError`).

    ``shift``: ``False`` (the default here and in :class:`~vlm_collate.VLMCollator`)
    returns Hugging Face style batches (unshifted ``labels``; the model's loss
    shifts). ``True`` (the default of the seed-named functions such as
    ``qwen2_5_collate_fn``) pre-shifts as the seed does (``labels[:, 1:]``, the
    token-axis tensors ``[:, :-1]``) and adds the same targets as ``shift_labels``,
    which transformers' and TRL's losses use as-is instead of shifting again.
    ``max_length``: the longest sample allowed (tokens before any shift).
    ``pad_to_max_length``: every batch returned with exactly ``max_length`` columns
    (pipeline parallelism). ``pad_to_multiple_of``: the returned column count is
    rounded up to a multiple. ``padding_side``: ``"right"`` or ``"left"`` (every
    token-axis tensor). ``label_pad_token_id``: the label of every position that
    is not a target (negative: an id from 0 up is a real token the loss would train
    on). ``return_tensors``: ``"pt"`` (torch) or ``"np"`` (numpy; bfloat16 becomes
    float32). ``on_overflow``: what an over-long sample gets
    (``"error"``, ``"drop"``, or ``"truncate"``, which cuts text only).
    ``on_unlabeled``: what a sample with no target token gets (no assistant turn,
    or a reply truncation removed): ``"warn"`` (kept, all ignored), ``"raise"``
    or ``"drop"``. ``on_special_text``: special-token text inside message content
    (``"<|im_end|>"`` in a user message) is tokenized as plain text (``"escape"``),
    refused with an error naming the sample and message (``"error"``), or kept as
    the special token (``"keep"``); labels follow the roles in all three.
    ``base_dir``: the folder relative media paths are read from, and confined to
    (``../`` or a symlink leading out is a MediaError). ``allow_absolute_paths``: whether
    absolute paths and ``file://`` URLs may name files outside ``base_dir`` (``None``:
    True without ``base_dir``, False with it; see docs/errors.md). ``min_pixels``,
    ``max_pixels``: the pixel budget of each image, applied by the processor's own
    resize rule (processors with a pixel-budget rule: Qwen2-VL family, GLM-4.1V; see
    docs/options.md; a row or an image item may carry its own). ``shrink_media``: with
    ``max_length``, a sample longer than it first has its images' ``max_pixels`` lowered
    (down to ``min_pixels``) until it fits, then ``on_overflow`` applies (see
    docs/formats.md, Media budgets). ``max_frames``: the most frames of each video given
    as frames, sampled uniformly by the video processor's own ``sample_frames`` (a row
    or a video item may carry its own). ``fps``: frames per second kept of each video
    whose source rate is known (a video item's ``video_fps`` or ``metadata``), sampled
    by the video processor's own ``sample_frames(metadata, fps=...)`` (a row or a video
    item may carry its own; see docs/formats.md, Video frame budgets). ``fast_path``: build
    the batch without the processor call where the processor's settings are ones the
    fast path reproduces (Qwen2-VL, Qwen2.5-VL, Qwen3-VL; see :mod:`.fast_path`);
    ``False`` always calls the processor. ``reasoning``: reasoning text an assistant
    message supplies and the template renders (``reasoning_content``, or
    ``<think>…</think>`` in the reply) is a target (``"label"``) or not
    (``"exclude"``); scaffolding the template inserts by itself is never a target.
    ``train_on``: ``"assistant"`` (every reply), ``"last"`` (the last reply), ``"all"``
    (every token but media placeholders) or a list of roles; a message's ``"train"``
    overrides it and its ``"weight"`` is returned as ``loss_weights`` (docs/labels.md).
    ``close_last_reply``: for a template that writes no closing token, ``"auto"`` appends
    the tokenizer's eos after the last reply and labels it, a token id (or a generation
    config: its first ``eos_token_id``) appends that token, ``"never"`` appends nothing.
    ``format``: the published row shape (``"auto"``, detected per row, or one of
    :data:`FORMAT_NAMES`; see docs/formats.md).
    """

    shift: bool = False
    max_length: int | None = None
    pad_to_max_length: bool = False
    pad_to_multiple_of: int | None = None
    padding_side: PaddingSide = "right"
    label_pad_token_id: int = IGNORE_INDEX
    return_tensors: ReturnTensors = "pt"
    on_overflow: OnOverflow = "error"
    on_unlabeled: OnUnlabeled = "warn"
    on_special_text: OnSpecialText = "escape"
    base_dir: str | None = None
    allow_absolute_paths: bool | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None
    shrink_media: bool = False
    max_frames: int | None = None
    fps: float | None = None
    fast_path: bool = True
    reasoning: Literal["label", "exclude"] = "label"
    format: str = "auto"
    train_on: Any = "assistant"
    close_last_reply: Any = "auto"

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for name in ("shift", "pad_to_max_length", "fast_path", "shrink_media"):
            set_(self, name, _boolean(name, getattr(self, name)))
        if self.max_length is not None:
            set_(self, "max_length", _integer("max_length", self.max_length, 2, MAX_COLUMNS))
        if self.pad_to_multiple_of is not None:
            set_(
                self,
                "pad_to_multiple_of",
                _integer("pad_to_multiple_of", self.pad_to_multiple_of, 1, MAX_COLUMNS),
            )
        set_(
            self,
            "label_pad_token_id",
            _integer("label_pad_token_id", self.label_pad_token_id, -(2**63), -1),
        )
        set_(self, "train_on", _train_on(self.train_on))
        set_(self, "close_last_reply", _close_last_reply(self.close_last_reply))
        for name, choices in _CHOICES.items():
            value = getattr(self, name)
            if not isinstance(value, str) or value not in choices:
                raise OptionError(
                    f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}"
                )
        if self.base_dir is not None:
            if not isinstance(self.base_dir, (str, os.PathLike)):
                raise OptionError(
                    f"base_dir must be a path (str or os.PathLike), got {self.base_dir!r}"
                )
            set_(self, "base_dir", os.fspath(self.base_dir))
        if self.allow_absolute_paths is not None:
            allow = _boolean("allow_absolute_paths", self.allow_absolute_paths)
            set_(self, "allow_absolute_paths", allow)
        for name in ("min_pixels", "max_pixels"):  # the image budget
            if getattr(self, name) is not None:
                set_(self, name, _integer(name, getattr(self, name), 1, MAX_PIXELS))
        if self.max_frames is not None:  # the video frame budget
            set_(self, "max_frames", _integer("max_frames", self.max_frames, 1, MAX_COLUMNS))
        if self.fps is not None:  # the video sampling rate (frames per second)
            set_(self, "fps", positive_fps("fps", self.fps, OptionError))
        if self.min_pixels and self.max_pixels and self.min_pixels > self.max_pixels:
            raise OptionError(
                f"min_pixels={self.min_pixels} is above max_pixels={self.max_pixels}; "
                "pass min_pixels <= max_pixels"
            )
        if self.pad_to_max_length:
            if self.max_length is None:
                raise OptionError("pad_to_max_length=True needs max_length (the column count)")
            multiple = self.pad_to_multiple_of
            if multiple is not None and self.max_length % multiple:
                raise OptionError(
                    f"pad_to_max_length=True returns exactly max_length={self.max_length} "
                    f"columns, which is not a multiple of pad_to_multiple_of={multiple}; "
                    f"pass max_length={-(-self.max_length // multiple) * multiple} or drop "
                    "one of the two options"
                )

    @classmethod
    def names(cls) -> tuple[str, ...]:
        """The option names, in declaration order."""
        return tuple(f.name for f in dataclasses.fields(cls))

    def replace(self, **changes: Any) -> CollateOptions:
        """A copy with ``changes`` applied (validated like the original)."""
        return collate_options(**{**dataclasses.asdict(self), **changes})


_generated_init = CollateOptions.__init__


@functools.wraps(_generated_init)
def _checked_init(self: CollateOptions, *args: Any, **values: Any) -> None:
    """The dataclass ``__init__``, with option names checked first: an unknown (or
    misspelt) name is an :class:`OptionError` listing the valid ones, not a TypeError."""
    if args:
        raise OptionError(
            f"CollateOptions takes keyword arguments only (got {len(args)} positional); "
            f"valid options: {', '.join(CollateOptions.names())}"
        )
    unknown = sorted(set(values) - set(CollateOptions.names()))
    if unknown:
        raise unknown_options_error(unknown, CollateOptions.names())
    _generated_init(self, **values)


CollateOptions.__init__ = _checked_init  # type: ignore[method-assign]


def collate_options(
    options: CollateOptions | None = None, *, extra_names: Iterable[str] = (), **values: Any
) -> CollateOptions:
    """``CollateOptions`` from keyword ``values`` (on top of ``options`` when given,
    where a ``None`` keeps the object's value); an unknown name is an
    :class:`OptionError` listing the valid ones (``extra_names`` are the calling
    function's own parameters, listed too)."""
    unknown = sorted(set(values) - set(CollateOptions.names()))
    if unknown:
        raise unknown_options_error(unknown, [*CollateOptions.names(), *extra_names])
    if options is not None:
        if not isinstance(options, CollateOptions):
            raise OptionError(f"options must be a CollateOptions, got {type(options).__name__}")
        given = {k: v for k, v in values.items() if v is not None}  # None: the object's value
        values = {**dataclasses.asdict(options), **given}
    return CollateOptions(**values)


def seed_options(extra_names: Iterable[str] = (), **values: Any) -> CollateOptions:
    """The options of a seed-named collate function: :func:`collate_options`, but
    pre-shifted (``shift=True``, the seed's contract) unless ``shift`` or an
    ``options`` object is given."""
    if values.get("options") is None:  # a CollateOptions object given says its own shift
        values.setdefault("shift", SEED_SHIFT)
    return collate_options(extra_names=extra_names, **values)


def unknown_options_error(unknown: Iterable[str], valid: Iterable[str]) -> OptionError:
    """The error for option names a collate function does not take."""
    unknown, names = list(unknown), ", ".join(sorted(set(valid)))
    plural = "s" if len(unknown) > 1 else ""
    return OptionError(
        f"unknown option{plural} {', '.join(map(repr, unknown))}; valid options: {names}"
    )


def as_dict(options: CollateOptions) -> Mapping[str, Any]:
    """The options as keyword arguments."""
    return dataclasses.asdict(options)


def flag_option(name: str, value: Any) -> bool:
    """``value`` as a bool; anything but True or False is an :class:`OptionError`."""
    return _boolean(name, value)


def dtype_option(name: str, value: Any) -> Any:
    """``value`` when it is a floating torch dtype or None, else an :class:`OptionError`."""
    import torch

    if value is None or (isinstance(value, torch.dtype) and value.is_floating_point):
        return value
    raise OptionError(f"{name} must be a floating torch dtype or None, got {value!r}")


def _train_on(value: Any) -> str | tuple[str, ...]:
    if isinstance(value, str) and value in ("assistant", "last", "all"):
        return value
    if isinstance(value, (list, tuple)) and value and all(isinstance(r, str) and r for r in value):
        return tuple(dict.fromkeys(value))
    raise OptionError(
        f"train_on must be 'assistant', 'last', 'all' or a non-empty list of roles, got {value!r}"
    )


def _close_last_reply(value: Any) -> str | int:
    if isinstance(value, str) and value in ("auto", "never"):
        return value
    if not isinstance(value, (str, int, np.integer, list, tuple)):
        value = getattr(value, "eos_token_id", value)  # a GenerationConfig
    if isinstance(value, (list, tuple)) and value:
        value = value[0]  # a generation config's eos list: its first id
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 0:
        return int(value)
    raise OptionError(
        "close_last_reply must be 'auto', 'never', a token id >= 0 or a generation config "
        f"with eos_token_id, got {value!r}"
    )


def _boolean(name: str, value: Any) -> bool:
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise OptionError(f"{name} must be True or False, got {value!r}")


def positive_fps(name: str, value: Any, error: type[Exception]) -> float:
    """``value`` as a positive finite frame rate, or ``error`` naming ``name``."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
        raise error(f"{name} must be a positive number, got {value!r} ({type(value).__name__})")
    if not math.isfinite(float(value)) or float(value) <= 0:
        raise error(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _integer(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise OptionError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if minimum is not None and value < minimum:
        raise OptionError(f"{name} must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise OptionError(f"{name} must be at most {maximum}, got {value}")
    return value
