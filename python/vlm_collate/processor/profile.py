"""The processor profile: every fact the pipeline needs about a processor, resolved once.

A profile holds the processor's family (and its rotary-position family), the
tokenizer and its pad id, the tokenizer's special ids and strings, the media kinds
the processor takes (each with the placeholder its chat template writes and the ids
the processor expands one item into), the tokens that open and close a media block,
every id a media block may hold, the merge kernel of its vision grid, the keys it
returns along the token axis (and which axis that is), its audio sampling rate and
image limits. Facts that cost a rendering or a table to derive (label markers, the
renderer, the fast-path plan, text patterns) are computed on first use and kept on
the profile (:meth:`ProcessorProfile.cached`). Profiles are cached in one place
(:func:`profile_of`), weakly per processor; every module reads these facts from the
profile and nothing re-derives them. A family may override any field (its
registered ``profile`` declaration).
"""

from __future__ import annotations

import contextlib
import re
import threading
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar

import numpy as np

from ..errors import CollateError
from .family import Family, family_of, model_type_of, rope_family_of
from .tokens import optional_token_id, pad_token_id, tokenizer_of

T = TypeVar("T")

TOKEN_AXIS_KEYS: tuple[str, ...] = (
    "input_ids",
    "attention_mask",
    "token_type_ids",
    "mm_token_type_ids",
    "loss_mask",
)
"""Keys whose tensors run along the token axis of ``input_ids``, shifted with it."""

MEDIA_OWNERS: dict[str, tuple[str, ...]] = {
    "image": ("image_processor",),
    "video": ("video_processor", "image_processor"),
    "audio": ("feature_extractor", "audio_processor"),
}
"""Media kind -> the processor attributes that take it (the first one is named in errors)."""

_DEFAULT_PLACEHOLDERS = {
    "image": "<|image_pad|>",
    "video": "<|video_pad|>",
    "audio": "<|audio_pad|>",
}

#: Attributes naming a token that lies inside a media block (placeholders, delimiters,
#: row, tile and break tokens), on a processor or its tokenizer, across transformers'
#: processors: Qwen2/2.5/3-VL and Omni, Gemma 3 and 4, Llama 4, Pixtral, Idefics3 and
#: SmolVLM, InternVL, Kimi, Phi-4.
_BLOCK_TOKEN_ATTRIBUTES = (
    "image_token",
    "video_token",
    "audio_token",
    "media_token",
    "fake_image_token",
    "global_image_token",
    "img_patch_token",
    "tile_token",
    "tile_global_token",
    "image_break_token",
    "image_end_token",
    "context_image_token",
)

#: (open, close) attribute pairs naming the delimiters around a media block.
_BLOCK_ATTRIBUTE_PAIRS = (
    ("vision_start_token", "vision_end_token"),
    ("vision_bos_token", "vision_eos_token"),
    ("audio_bos_token", "audio_eos_token"),
    ("audio_start_token", "audio_end_token"),
    ("image_start_token", "image_end_token"),
    ("start_image_token", "end_image_token"),
    ("start_of_img_token", "end_of_img_token"),
    ("boi_token", "eoi_token"),
    ("boa_token", "eoa_token"),
    ("media_start_token", "media_end_token"),
)

#: Known (open, close) delimiters written by templates rather than named by attributes,
#: used when they are single tokens of the vocabulary: Qwen2-VL, Qwen2.5-Omni, Kimi,
#: Gemma 3 (``<end_of_image>`` has no attribute), GLM-4.1V, InternVL.
_KNOWN_PAIRS = (
    ("<|vision_start|>", "<|vision_end|>"),
    ("<|audio_start|>", "<|audio_end|>"),
    ("<|vision_bos|>", "<|vision_eos|>"),
    ("<|audio_bos|>", "<|audio_eos|>"),
    ("<|media_start|>", "<|media_end|>"),
    ("<|media_begin|>", "<|media_end|>"),
    ("<start_of_image>", "<end_of_image>"),
    ("<start_of_audio>", "<end_of_audio>"),
    ("<|image_start|>", "<|image_end|>"),
    ("<|begin_of_image|>", "<|end_of_image|>"),
    ("<|begin_of_video|>", "<|end_of_video|>"),
    ("<img>", "</img>"),
)

TOKEN_AXES: dict[str, int] = dict.fromkeys(TOKEN_AXIS_KEYS, 1)
"""Token-axis keys every profile starts with, and their token axis (1 in ``(B, L)``); a
family adds its own (Mllama's ``cross_attention_mask`` ``(B, L, images, tiles)``).
Padding, truncation and the shift handle each key on its axis."""


@dataclass(frozen=True)
class MediaKind:
    """One kind of media a processor takes: the ``placeholder`` its chat template writes
    per item, that placeholder's id, and ``expanded_id``: the id the processor repeats
    for an item's features (Gemma 3 writes ``<start_of_image>`` and repeats
    ``<image_soft_token>``; Qwen repeats the placeholder itself)."""

    kind: str
    placeholder: str
    placeholder_id: int | None
    expanded_id: int | None


@dataclass(frozen=True)
class ProcessorProfile:
    """Every fact about a processor the pipeline reads (see the module docstring)."""

    processor_class: str
    model_type: str | None
    tokenizer: Any
    pad_id: int | None
    media: Mapping[str, MediaKind]
    block_opens: tuple[int, ...]
    block_closes: tuple[int, ...]
    media_ids: tuple[int, ...]
    merge_kernel: tuple[int, int] | None
    token_axes: Mapping[str, int]
    special_ids: frozenset[int]
    special_strings: tuple[str, ...] = ()
    family: Family | None = None
    rope_family: str | None = None
    vision_start_id: int | None = None
    audio_start_id: int | None = None
    sampling_rate: int | None = None
    min_audio_samples: int | None = None
    image_limits: Mapping[str, float] = field(default_factory=dict)
    _processor: Any = field(default=None, repr=False, compare=False)
    _memo: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)
    _lock: Any = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def processor(self) -> Any:
        """The processor (or tokenizer) this profile describes; a :class:`CollateError`
        once it no longer exists (the profile holds it weakly)."""
        processor = self._processor
        if isinstance(processor, weakref.ref):
            processor = processor()
        if processor is None:
            raise CollateError("the processor of this profile no longer exists")
        return processor

    def takes(self, kind: str) -> bool:
        """Whether the processor has a processor for ``kind`` media."""
        return kind in self.media

    def require_pad_id(self) -> int:
        """The pad id; a tokenizer without one is a clear :class:`CollateError`."""
        if self.pad_id is None:
            pad_token_id(self.tokenizer)  # raises the error that says what to do
        return int(self.pad_id)  # type: ignore[arg-type]

    def cached(self, key: Any, compute: Callable[[], T]) -> T:
        """The fact ``key`` of this processor, computed by ``compute`` on first use and
        kept with the profile (label markers, renderers, the fast-path plan, patterns)."""
        try:
            return self._memo[key]  # type: ignore[no-any-return]
        except KeyError:
            pass
        value = compute()
        with self._lock:
            return self._memo.setdefault(key, value)  # type: ignore[no-any-return]

    @property
    def special_pattern(self) -> re.Pattern[str] | None:
        """The tokenizer's special-token strings as one pattern (longest first), or None."""
        return self.cached("special_pattern", lambda: _pattern(self.special_strings))

    @property
    def media_pattern(self) -> re.Pattern[str] | None:
        """The strings of the media placeholder and block tokens as one pattern, or None:
        typed in message text, the processor would read them as media slots."""
        return self.cached("media_pattern", lambda: _pattern(_media_strings(self)))

    @property
    def has_chat_template(self) -> bool:
        """Whether the processor or its tokenizer has a chat template."""
        return bool(_chat_template(self.processor))

    @property
    def template_key(self) -> str:
        """The processor's chat template as a cache key (it may be replaced at any time)."""
        template = _chat_template(self.processor)
        if isinstance(template, Mapping):
            template = repr(sorted(template.items()))
        return str(template or "")


def _text(value: Any) -> str | None:
    """A token attribute's text (``AddedToken`` or ``str``), or None."""
    value = getattr(value, "content", value)
    return value if isinstance(value, str) and value else None


def _single_token_id(tokenizer: Any, token: Any) -> int | None:
    """Id of ``token`` when it is one token of the vocabulary, else None."""
    text = _text(token)
    tid = optional_token_id(tokenizer, text) if text else None
    if tid is None:
        return None
    try:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    except Exception:  # noqa: BLE001 - a tokenizer that cannot encode it alone
        return None
    return tid if list(ids) == [tid] else None


def _attribute(processor: Any, tokenizer: Any, name: str) -> Any:
    for owner in (processor, tokenizer):
        with contextlib.suppress(Exception):
            value = getattr(owner, name, None)
            if value is not None:
                return value
    return None


def _id_attribute(owner: Any, name: str, tokenizer: Any) -> list[int]:
    """Valid ids in ``owner.name`` (an int or a list of ints), unknown ids left out."""
    try:
        value = getattr(owner, name, None)
    except Exception:  # noqa: BLE001 - properties that need state a stand-in lacks
        return []
    values = value if isinstance(value, (list, tuple)) else [value]
    unk = getattr(tokenizer, "unk_token_id", None)
    return [int(v) for v in values if isinstance(v, (int, np.integer)) and v >= 0 and int(v) != unk]


def _media_kind(processor: Any, tokenizer: Any, kind: str) -> MediaKind:
    placeholder = _text(_attribute(processor, tokenizer, f"{kind}_token"))
    if kind == "image" and placeholder is None:
        placeholder = _text(_attribute(processor, tokenizer, "media_token"))
    placeholder_id = _single_token_id(tokenizer, placeholder) if placeholder else None
    if placeholder_id is None:
        for owner in (processor, tokenizer):
            ids = _id_attribute(owner, f"{kind}_token_id", tokenizer)
            if kind == "image":
                ids += _id_attribute(owner, "media_placeholder_token_id", tokenizer)
            if ids:
                placeholder_id = ids[0]
                break
    if placeholder is None:
        placeholder = (
            tokenizer.convert_ids_to_tokens(placeholder_id)
            if placeholder_id is not None
            else _DEFAULT_PLACEHOLDERS[kind]
        )
        if placeholder_id is None:
            placeholder_id = _single_token_id(tokenizer, placeholder)
    expanded = _id_attribute(processor, f"{kind}_token_ids", tokenizer)
    expanded_id = expanded[0] if expanded else placeholder_id
    return MediaKind(kind, placeholder, placeholder_id, expanded_id)


def _chat_template(processor: Any) -> Any:
    return getattr(processor, "chat_template", None) or getattr(
        tokenizer_of(processor), "chat_template", None
    )


def _pattern(strings: Any) -> re.Pattern[str] | None:
    ordered = sorted({s for s in strings if s}, key=len, reverse=True)
    return re.compile("|".join(map(re.escape, ordered))) if ordered else None


def _media_strings(profile: ProcessorProfile) -> set[str]:
    ids = sorted({*profile.media_ids, *profile.block_opens, *profile.block_closes})
    tokens = profile.tokenizer.convert_ids_to_tokens(ids) if ids else []
    strings = {t for t in tokens if isinstance(t, str) and t}
    strings.update(
        m.placeholder
        for m in profile.media.values()
        if m.placeholder_id is not None or m.placeholder not in _DEFAULT_PLACEHOLDERS.values()
    )
    return strings


def _special_ids(tokenizer: Any) -> frozenset[int]:
    """Ids of the tokenizer's special tokens (named ones and added tokens marked special)."""
    decoder = getattr(tokenizer, "added_tokens_decoder", None) or {}
    special = {int(i) for i, t in decoder.items() if getattr(t, "special", False)}
    named = getattr(tokenizer, "all_special_ids", None) or []
    return frozenset(special | {int(i) for i in named if i is not None})


def _special_strings(tokenizer: Any) -> tuple[str, ...]:
    """The tokenizer's special-token strings (named ones and added tokens marked special)."""
    strings = {str(t) for t in getattr(tokenizer, "all_special_tokens", None) or []}
    for token in (getattr(tokenizer, "added_tokens_decoder", None) or {}).values():
        if getattr(token, "special", False):
            strings.add(str(token.content))
    return tuple(sorted((s for s in strings if s), key=len, reverse=True))


def _first_token_id(processor: Any, tokenizer: Any, names: tuple[str, ...], default: str) -> Any:
    """Id of the first of ``names`` the processor names (as a string), else of ``default``."""
    for name in names:
        token = getattr(processor, name, None)
        if isinstance(token, str):
            return optional_token_id(tokenizer, token)
    return optional_token_id(tokenizer, default)


def image_limits(processor: Any) -> dict[str, float]:
    """The image limits a processor refuses beyond, where it has them: Qwen2-VL's
    ``smart_resize`` (and the families reusing it) needs an aspect ratio below 200."""
    image_processor = getattr(processor, "image_processor", None)
    module = type(image_processor).__module__ if image_processor is not None else ""
    if "qwen2_vl" in module or "qwen2_5_vl" in module:
        return {"max_aspect_ratio": 200.0}
    return {}


def sampling_rate_of(processor: Any) -> int | None:
    """The sampling rate the processor's audio feature extractor expects, if any."""
    for name in ("feature_extractor", "audio_processor"):
        rate = getattr(getattr(processor, name, None), "sampling_rate", None)
        if rate is not None:
            return int(rate)
    return None


def min_audio_samples(processor: Any) -> int | None:
    """The shortest waveform the processor's feature extractor can window (its
    ``n_fft``), if it says."""
    for name in ("feature_extractor", "audio_processor"):
        extractor = getattr(processor, name, None)
        for attribute in ("n_fft", "win_length"):
            value = getattr(extractor, attribute, None)
            if isinstance(value, int) and value > 0:
                return value
    return None


def _merge_kernel(processor: Any) -> tuple[int, int] | None:
    image_processor = getattr(processor, "image_processor", None)
    kernel = getattr(image_processor, "merge_kernel_size", None)
    if kernel is not None:
        return (int(kernel[0]), int(kernel[1]))
    merge = getattr(image_processor, "merge_size", None)
    return (int(merge), int(merge)) if isinstance(merge, (int, np.integer)) else None


def resolved_profile(processor: Any, **overrides: Any) -> ProcessorProfile:
    """The profile of ``processor``, derived now (see :func:`profile_of`); ``overrides``
    replace derived facts (default: its family's declaration)."""
    tokenizer = tokenizer_of(processor)
    found = family_of(processor)
    if not overrides and found is not None:
        overrides = dict(found.profile)
    takes = [
        kind
        for kind, owners in MEDIA_OWNERS.items()
        if any(getattr(processor, owner, None) is not None for owner in owners)
    ]
    media = {kind: _media_kind(processor, tokenizer, kind) for kind in takes}
    block_ids: set[int] = set()
    for kind in ("image", "video", "audio"):
        block_ids.update(_id_attribute(processor, f"{kind}_token_ids", tokenizer))
    for name in _BLOCK_TOKEN_ATTRIBUTES:
        tid = _single_token_id(tokenizer, _attribute(processor, tokenizer, name))
        if tid is not None:
            block_ids.add(tid)
    block_ids.update(_id_attribute(processor, "media_placeholder_token_id", tokenizer))
    block_ids.update(m.placeholder_id for m in media.values() if m.placeholder_id is not None)
    pairs: dict[tuple[int, int], None] = {}
    named = [(_attribute(processor, tokenizer, a), _attribute(processor, tokenizer, b))
             for a, b in _BLOCK_ATTRIBUTE_PAIRS]  # fmt: skip
    for open_token, close_token in [*named, *_KNOWN_PAIRS]:
        opened = _single_token_id(tokenizer, open_token)
        closed = _single_token_id(tokenizer, close_token)
        if opened is not None and closed is not None and opened != closed:
            pairs[(opened, closed)] = None
    pad = getattr(tokenizer, "pad_token_id", None)
    reference = processor
    with contextlib.suppress(TypeError):
        reference = weakref.ref(processor)
    profile = ProcessorProfile(
        processor_class=type(processor).__name__,
        model_type=model_type_of(processor),
        tokenizer=tokenizer,
        pad_id=int(pad) if pad is not None else None,
        media=media,
        block_opens=tuple(p[0] for p in pairs),
        block_closes=tuple(p[1] for p in pairs),
        media_ids=tuple(sorted(block_ids | {i for p in pairs for i in p})),
        merge_kernel=_merge_kernel(processor),
        token_axes=dict(TOKEN_AXES),
        special_ids=_special_ids(tokenizer),
        special_strings=_special_strings(tokenizer),
        family=found,
        rope_family=rope_family_of(processor),
        vision_start_id=_first_token_id(
            processor, tokenizer, ("vision_start_token", "vision_bos_token"), "<|vision_start|>"
        ),
        audio_start_id=_first_token_id(
            processor, tokenizer, ("audio_bos_token", "audio_start_token"), "<|audio_start|>"
        ),
        sampling_rate=sampling_rate_of(processor),
        min_audio_samples=min_audio_samples(processor),
        image_limits=image_limits(processor),
        _processor=reference,
    )
    return with_overrides(profile, overrides) if overrides else profile


def with_overrides(profile: ProcessorProfile, overrides: Mapping[str, Any]) -> ProcessorProfile:
    """``profile`` with a family's declared facts: ``expanded`` (kind -> the token the
    processor repeats per item), ``token_axes`` (more token-axis keys) and any field."""
    fields = dict(overrides)
    tokenizer = profile.tokenizer
    media = dict(profile.media)
    for kind, token in dict(fields.pop("expanded", {})).items():
        if kind in media:
            media[kind] = replace(media[kind], expanded_id=_single_token_id(tokenizer, token))
    axes = {**profile.token_axes, **dict(fields.pop("token_axes", {}))}
    extra = tuple(_single_token_id(tokenizer, t) for t in fields.pop("block_tokens", ()))
    media_ids = tuple(sorted({*profile.media_ids, *(i for i in extra if i is not None)}))
    return replace(profile, media=media, token_axes=axes, media_ids=media_ids, **fields)


_PROFILES: weakref.WeakKeyDictionary[Any, ProcessorProfile] = weakref.WeakKeyDictionary()
_STRONG: dict[int, tuple[Any, ProcessorProfile]] = {}
"""Profiles of the rare processors that take no weak reference, keyed by ``id`` with the
processor itself kept alive beside its profile (so an ``id`` is never reused for another)."""


def profile_of(processor: Any) -> ProcessorProfile:
    """The profile of ``processor`` (or of a bare tokenizer), resolved once and cached
    per processor (weakly); resolved again when its tokenizer was replaced."""
    if isinstance(processor, ProcessorProfile):
        return processor
    try:
        cached = _PROFILES.get(processor)
        weak = True
    except TypeError:
        entry = _STRONG.get(id(processor))
        cached = entry[1] if entry is not None and entry[0] is processor else None
        weak = False
    if cached is not None and cached.tokenizer is tokenizer_of(processor):
        return cached
    profile = resolved_profile(processor)
    if weak:
        _PROFILES[processor] = profile
    else:
        _STRONG[id(processor)] = (processor, profile)
    return profile


def media_token_ids(processor: Any) -> list[int]:
    """Every id a media block of ``processor`` may hold (never a target, never cut)."""
    return list(profile_of(processor).media_ids)


def media_block_ids(processor: Any) -> tuple[list[int], list[int], list[int]]:
    """``(ids inside media blocks, block-open ids, block-close ids)`` of ``processor``'s
    profile: placeholders, row and break tokens, then the paired delimiters."""
    profile = profile_of(processor)
    delimiters = {*profile.block_opens, *profile.block_closes}
    inside = [i for i in profile.media_ids if i not in delimiters]
    return inside, list(profile.block_opens), list(profile.block_closes)
