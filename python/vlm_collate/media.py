"""Media of a conversation: collected in order and loaded into what processors take.

Images may be PIL images, paths, ``file://`` URLs, ``data:`` URLs or bare base64
strings, bytes, or arrays; they are returned as RGB PIL images. Videos are
frame arrays or lists of images. Audio is an array (with an optional sampling
rate) or a ``{"array", "sampling_rate"}`` dict.
"""

from __future__ import annotations

import base64
import binascii
import io
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlparse

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .errors import MediaError

_REMOTE_SCHEMES = ("http", "https", "s3", "gs")


@dataclass
class SampleMedia:
    """The media items of one sample, in conversation order."""

    images: list[Any] = field(default_factory=list)
    videos: list[Any] = field(default_factory=list)
    audios: list[Any] = field(default_factory=list)


def _item_value(item: Mapping[str, Any], kind: str) -> Any:
    for key in (kind, "path", "url", f"{kind}_url", "data"):
        if key in item and item[key] is not None:
            value = item[key]
            return value.get("url", value) if isinstance(value, Mapping) else value
    return None


def media_of(
    conversation: Sequence[Mapping[str, Any]],
    index: int,
    kinds: Sequence[str] = ("image", "video", "audio"),
) -> SampleMedia:
    """The raw media items of ``kinds`` in a conversation (sample ``index``), in order."""
    media = SampleMedia()
    for turn, message in enumerate(conversation):
        content = message.get("content")
        if isinstance(content, str):
            continue
        for k, item in enumerate(content):
            kind = item.get("type")
            if kind not in kinds:
                continue
            value = _item_value(item, kind)
            if value is None:
                raise MediaError(
                    f"sample {index}, message {turn}, item {k}: a {kind} item needs its data "
                    f"under '{kind}' (or 'path'/'url')"
                )
            getattr(media, kind + "s").append(value)
    return media


def _open_bytes(data: bytes, where: str) -> Image.Image:
    try:
        image = Image.open(io.BytesIO(data))
        image.load()
        return image
    except (UnidentifiedImageError, OSError) as err:
        raise MediaError(f"{where}: the image data cannot be decoded ({err})") from err


def _image_from_string(value: str, where: str) -> Image.Image:
    if value.startswith("data:"):
        _, _, payload = value.partition(",")
        return _open_bytes(_b64decode(payload, where), where)
    parsed = urlparse(value)
    if parsed.scheme in _REMOTE_SCHEMES:
        raise MediaError(
            f"{where}: remote image URLs ({parsed.scheme}://) are not fetched during collation; "
            "download the data first and pass a path, bytes or a PIL image"
        )
    path = unquote(parsed.path) if parsed.scheme == "file" else value
    if os.path.exists(path):
        try:
            with Image.open(path) as image:
                image.load()
                return image.copy()
        except (UnidentifiedImageError, OSError) as err:
            raise MediaError(f"{where}: {path} is not a readable image ({err})") from err
    if len(value) > 256 and "/" not in value[:64].replace("+", ""):
        return _open_bytes(_b64decode(value, where), where)
    raise MediaError(f"{where}: image file not found: {path}")


def _b64decode(payload: str, where: str) -> bytes:
    try:
        return base64.b64decode(payload, validate=False)
    except (binascii.Error, ValueError) as err:
        raise MediaError(f"{where}: invalid base64 image data ({err})") from err


def load_image(value: Any, where: str = "image") -> Image.Image:
    """An RGB PIL image from any supported form; a clear ValueError otherwise."""
    if isinstance(value, Image.Image):
        image = value
    elif isinstance(value, (bytes, bytearray)):
        image = _open_bytes(bytes(value), where)
    elif isinstance(value, str):
        image = _image_from_string(value, where)
    elif isinstance(value, os.PathLike):
        image = _image_from_string(os.fspath(value), where)
    elif hasattr(value, "__array__"):
        array = np.asarray(value)
        if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
            array = np.moveaxis(array, 0, -1)
        if array.ndim == 3 and array.shape[-1] == 1:
            array = array[..., 0]
        if array.dtype != np.uint8:
            scale = 255.0 if array.size and float(np.nanmax(array)) <= 1.0 else 1.0
            array = np.clip(array * scale, 0, 255).astype(np.uint8)
        try:
            image = Image.fromarray(array)
        except (TypeError, ValueError) as err:
            raise MediaError(f"{where}: an array of shape {array.shape} is not an image") from err
    else:
        raise MediaError(f"{where}: unsupported image type {type(value).__name__}")
    if image.width == 0 or image.height == 0:
        raise MediaError(f"{where}: the image is empty ({image.width}x{image.height})")
    if image.mode != "RGB":
        if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
            image = image.convert("RGBA")
            background = Image.new("RGB", image.size, (255, 255, 255))
            background.paste(image, mask=image.getchannel("A"))
            image = background
        else:
            image = image.convert("RGB")
    return image


def load_video(value: Any, where: str = "video") -> Any:
    """Frames of a video: an array ``(T, H, W, C)`` or a list of RGB images.
    Paths are passed through for the processor's own decoder."""
    if isinstance(value, (str, os.PathLike)):
        path = os.fspath(value)
        path = unquote(urlparse(path).path) if path.startswith("file://") else path
        if not os.path.exists(path):
            raise MediaError(f"{where}: video file not found: {path}")
        return path
    if isinstance(value, (list, tuple)):
        if not value:
            raise MediaError(f"{where}: the video has no frames")
        return [load_image(frame, f"{where}, frame {i}") for i, frame in enumerate(value)]
    if hasattr(value, "__array__"):
        array = np.asarray(value)
        if array.ndim != 4 or array.shape[0] == 0:
            raise MediaError(f"{where}: a video array must be (T, H, W, C), got {array.shape}")
        return array
    raise MediaError(f"{where}: unsupported video type {type(value).__name__}")


def load_audio(value: Any, where: str = "audio") -> tuple[np.ndarray, int | None]:
    """``(waveform, sampling_rate)`` from a dict, an ``(array, rate)`` pair or an array."""
    rate = None
    if isinstance(value, Mapping):
        if "array" not in value:
            raise MediaError(f"{where}: an audio dict needs 'array' (and 'sampling_rate')")
        value, rate = value["array"], value.get("sampling_rate")
    elif isinstance(value, (list, tuple)) and len(value) == 2 and np.isscalar(value[1]):
        value, rate = value
    if isinstance(value, (str, os.PathLike)):
        raise MediaError(
            f"{where}: audio files are not decoded during collation; pass the waveform "
            "as {'array': ..., 'sampling_rate': ...}"
        )
    waveform = np.asarray(value, dtype=np.float32)
    if waveform.ndim == 2:
        waveform = waveform.mean(axis=0 if waveform.shape[0] < waveform.shape[1] else 1)
    if waveform.ndim != 1 or waveform.size == 0:
        raise MediaError(
            f"{where}: the waveform must be a non-empty 1-D array, got {waveform.shape}"
        )
    return waveform, int(rate) if rate is not None else None


def images_of(conversation: Sequence[Mapping[str, Any]], index: int) -> list[Image.Image]:
    """The images of sample ``index``, loaded as RGB."""
    return [
        load_image(v, f"sample {index}, image {k}")
        for k, v in enumerate(media_of(conversation, index, ("image",)).images)
    ]


def videos_of(conversation: Sequence[Mapping[str, Any]], index: int) -> list[Any]:
    """The videos of sample ``index``, loaded."""
    return [
        load_video(v, f"sample {index}, video {k}")
        for k, v in enumerate(media_of(conversation, index, ("video",)).videos)
    ]


def sampling_rate_of(processor: Any) -> int | None:
    """The sampling rate the processor's audio feature extractor expects, if any."""
    for name in ("feature_extractor", "audio_processor"):
        rate = getattr(getattr(processor, name, None), "sampling_rate", None)
        if rate is not None:
            return int(rate)
    return None


def waveform_at(value: Any, sampling_rate: int | None, where: str = "audio") -> np.ndarray:
    """The waveform of an audio item, its sampling rate checked against ``sampling_rate``
    (audio is never resampled silently)."""
    waveform, rate = load_audio(value, where)
    if rate is not None and sampling_rate is not None and rate != sampling_rate:
        raise MediaError(
            f"{where}: the audio is sampled at {rate} Hz but the processor expects "
            f"{sampling_rate} Hz; resample it when building the dataset"
        )
    return waveform


def media_counts(**counts: Sequence[int]) -> dict[str, Any]:
    """``n_<kind>_per_sample`` tensors ``(B,)`` for each kind present in the batch,
    e.g. ``media_counts(images=[1, 0])`` -> ``{"n_images_per_sample": tensor([1, 0])}``."""
    return {
        f"n_{kind}_per_sample": torch.tensor(list(per_sample), dtype=torch.long)
        for kind, per_sample in counts.items()
        if any(per_sample)
    }


def check_placeholder_counts(
    texts: Sequence[str], placeholder: str, counts: Sequence[int], kind: str, indices: Sequence[int]
) -> None:
    """Each rendered text holds one ``placeholder`` per media item of its sample."""
    for text, count, index in zip(texts, counts, indices):
        found = text.count(placeholder)
        if found != count:
            raise MediaError(
                f"sample {index}: the rendered conversation has {found} {kind} placeholders "
                f"({placeholder}) but the sample holds {count} {kind}s; every {kind} needs its "
                f"own {{'type': '{kind}'}} item"
            )


def media_per_sample(
    kind: str,
    texts: Sequence[str],
    conversations: Sequence[Sequence[Mapping[str, Any]]],
    indices: Sequence[int],
    placeholder: str,
) -> list[list[Any]]:
    """The loaded images or videos (``kind``) of each sample, checked against the
    ``placeholder`` count of its rendered text."""
    load = {"image": images_of, "video": videos_of}[kind]
    items = [load(c, i) for c, i in zip(conversations, indices)]
    check_placeholder_counts(texts, placeholder, [len(x) for x in items], kind, indices)
    return items


def flattened(per_sample: Sequence[Sequence[Any]]) -> list[Any]:
    """Media of all samples in batch order (what processors take)."""
    return [x for sample in per_sample for x in sample]
