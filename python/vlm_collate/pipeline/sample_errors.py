"""Exceptions escaping a processor or decoder, re-raised as the library's errors naming
the sample (processors see the whole batch, so the failing sample is found by
encoding the samples one at a time)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..errors import CollateError, MediaError, SampleError
from .media import media_of

Encode = Callable[[list[Any], list[list[dict[str, Any]]], list[int]], Mapping[str, Any]]


def _media_summary(conversation: Sequence[Mapping[str, Any]], index: int) -> str:
    """``"image 0 (PIL 10000x10), audio 0 (array (16,))"``: the sample's media items."""
    try:
        media = media_of(conversation, index)
    except CollateError:
        return ""
    parts = []
    for kind, values in (("image", media.images), ("video", media.videos), ("audio", media.audios)):
        for k, value in enumerate(values):
            if hasattr(value, "size") and hasattr(value, "mode"):
                what = f"{value.width}x{value.height} {value.mode}"
            elif hasattr(value, "shape"):
                what = f"{type(value).__name__} {tuple(value.shape)}"
            else:
                what = type(value).__name__
            parts.append(f"{kind} {k} ({what})")
    return ", ".join(parts)


def _sample_error(
    error: Exception, conversation: Sequence[Mapping[str, Any]], index: int
) -> SampleError:
    """The library's error for ``error`` raised while encoding sample ``index``."""
    media = _media_summary(conversation, index)
    kind = MediaError if media else SampleError
    held = f"; its media: {media}" if media else ""
    return kind(
        f"sample {index}: the processor failed on it ({type(error).__name__}: {error}){held}; "
        "fix or drop that item (the original error is chained)"
    )


def encoded_naming_sample(
    encode: Encode,
    examples: list[Any],
    conversations: list[list[dict[str, Any]]],
    indices: list[int],
) -> dict[str, Any]:
    """``encode(examples, conversations, indices)`` as a dict. An exception other than
    a :class:`CollateError` is re-raised as a SampleError (MediaError when the sample
    holds media) naming the first sample that fails on its own, the original chained;
    if none fails alone, a CollateError names the batch."""
    try:
        return dict(encode(examples, conversations, indices))
    except CollateError:
        raise
    except Exception as err:  # noqa: BLE001 - processors and decoders raise anything
        if len(indices) == 1:
            raise _sample_error(err, conversations[0], indices[0]) from err
        for example, conversation, index in zip(examples, conversations, indices):
            try:
                encode([example], [conversation], [index])
            except CollateError:
                raise
            except Exception as single:  # noqa: BLE001
                raise _sample_error(single, conversation, index) from single
        raise CollateError(
            f"the processor failed on the batch of samples {list(indices)} although each "
            f"encodes alone ({type(err).__name__}: {err})"
        ) from err
