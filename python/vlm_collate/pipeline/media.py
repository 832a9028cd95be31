"""Media of a conversation: collected in order and loaded as the ecosystem loads them.

Images may be PIL images, paths (relative ones against ``base_dir``), ``file://``
URLs, ``data:`` URLs or bare base64 strings, bytes, ``datasets`` image dicts
(``{"bytes", "path"}``, decoded or not), or arrays. They come back as RGB PIL images
with their EXIF orientation applied (as ``transformers.image_utils.load_image``
does), 16-bit and float data scaled by their range (never saturated), and PIL's
decompression-bomb limit enforced. Videos are frame arrays ``(T, H, W, C)`` or lists
of images. Audio is an array, an ``(array, rate)`` pair, a ``{"array",
"sampling_rate"}`` dict, or a path or bytes decoded by
``transformers.audio_utils.load_audio`` (WAV also without the ``audio`` extra).
Every failure is a :class:`~vlm_collate.errors.MediaError` naming the sample and item.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import os
import stat
import wave
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeAlias
from urllib.parse import unquote, urlparse

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from ..errors import MediaError

_REMOTE_SCHEMES = ("http", "https", "s3", "gs")
_PIL_ERRORS = (UnidentifiedImageError, OSError, ValueError, AssertionError, SyntaxError, EOFError)
AUDIO_EXTRA = "pip install 'vlm-collate[audio]'  (soundfile and soxr)"


@dataclass
class SampleMedia:
    """The media items of one sample, in conversation order."""

    images: list[Any] = field(default_factory=list)
    videos: list[Any] = field(default_factory=list)
    audios: list[Any] = field(default_factory=list)


def item_value(item: Mapping[str, Any], kind: str) -> Any:
    """The data of a media content item: under ``kind``, ``path``, ``url``,
    ``{kind}_url`` (a string or OpenAI's ``{"url": ...}``) or ``data``; None if absent."""
    for key in (kind, "path", "url", f"{kind}_url", "data"):
        value = item.get(key)
        if value is None:
            continue
        if isinstance(value, Mapping) and set(value) <= {"url", "detail"} and "url" in value:
            return value["url"]
        return value
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
        if isinstance(content, str) or content is None:
            continue
        for k, item in enumerate(content):
            kind = item.get("type")
            if kind not in kinds:
                continue
            value = item_value(item, kind)
            if value is None:
                raise MediaError(
                    f"sample {index}, message {turn}, item {k}: a {kind} item needs its data "
                    f"under '{kind}' (or 'path'/'url')"
                )
            getattr(media, kind + "s").append(value)
    return media


# --------------------------------------------------------------------------- sources


@dataclass(frozen=True)
class MediaAccess:
    """Where media paths may be read from: ``base_dir`` (relative paths are read under it
    and must stay inside it, symlinks resolved) and ``allow_absolute_paths`` (whether an
    absolute path or ``file://`` URL may name a file outside that root; ``None``: True
    without ``base_dir``, for backwards compatibility, False with it). Functions that
    take ``base_dir`` accept this object in its place."""

    base_dir: str | None = None
    allow_absolute_paths: bool | None = None

    @property
    def absolute_allowed(self) -> bool:
        if self.allow_absolute_paths is None:
            return self.base_dir is None
        return bool(self.allow_absolute_paths)


BaseDir: TypeAlias = "str | os.PathLike[str] | MediaAccess | None"
"""What a ``base_dir`` parameter takes: a folder, None, or a :class:`MediaAccess`."""


def media_access(base_dir: Any = None, allow_absolute_paths: bool | None = None) -> MediaAccess:
    """``base_dir`` (a path, None or a :class:`MediaAccess`) as a :class:`MediaAccess`."""
    if isinstance(base_dir, MediaAccess):
        return base_dir
    root = None if base_dir is None else os.fspath(base_dir)
    return MediaAccess(root, allow_absolute_paths)


def _local_path(value: str, base_dir: Any) -> str:
    """The file a path or ``file://`` URL names, relative paths under ``base_dir``."""
    path = unquote(urlparse(value).path) if value.startswith("file:") else value
    path = os.path.expanduser(path)
    root = media_access(base_dir).base_dir
    if root is not None and not os.path.isabs(path):
        path = os.path.join(root, path)
    return path


def _inside(path: str, root: str) -> bool:
    real, base = os.path.realpath(path), os.path.realpath(root)
    try:
        return os.path.commonpath([real, base]) == base
    except ValueError:  # different drives
        return False


def _confined(value: str, path: str, access: MediaAccess, where: str, kind: str) -> None:
    """Refuses a path that ``access`` does not allow: an absolute path or ``file://`` URL
    when absolute paths are not allowed and it lies outside the root, or a relative
    path that escapes the root (``../``, a symlink leading out)."""
    absolute = value.startswith("file:") or os.path.isabs(os.path.expanduser(value))
    if absolute and access.absolute_allowed:
        return
    if access.base_dir is None:
        if absolute:
            raise MediaError(
                f"{where}: {kind} path {value!r} is absolute (or a file:// URL) and "
                "allow_absolute_paths=False; pass a path relative to base_dir (and set "
                "base_dir), or allow_absolute_paths=True if you trust the data"
            )
        return  # relative, no base_dir: read from the working directory, as before
    if not _inside(path, access.base_dir):
        what = "an absolute path (or file:// URL)" if absolute else "a relative path"
        fix = (
            "pass allow_absolute_paths=True if you trust the data"
            if absolute
            else "fix the path in the dataset, or point base_dir at a folder that holds it"
        )
        raise MediaError(
            f"{where}: {kind} path {value!r} is {what} that resolves to "
            f"{os.path.realpath(path)}, outside base_dir {os.path.realpath(access.base_dir)}; "
            f"media paths are confined to base_dir; {fix}"
        )


def _special_file(path: str, where: str, kind: str) -> MediaError | None:
    """The error for a path that exists but is not a regular file (a directory, FIFO,
    socket or device), found with ``stat`` alone (a FIFO is never opened: it blocks)."""
    mode = os.stat(path).st_mode
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        what = "a directory"
    elif stat.S_ISFIFO(mode):
        what = "a FIFO (named pipe), which is not read (reading it would block)"
    elif stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        what = "a device"
    elif stat.S_ISSOCK(mode):
        what = "a socket"
    else:
        what = "not a regular file"
    return MediaError(
        f"{where}: the {kind} path {path} is {what}; a {kind} item must name a regular "
        "file: fix the path in the dataset"
    )


def checked_path(value: str, where: str, base_dir: Any, kind: str) -> str | None:
    """The local file a path or ``file://`` URL names, checked against ``base_dir``'s
    rules (see :class:`MediaAccess`) and refused when it is not a regular file; None
    when nothing exists there (the caller may read the string as base64 data)."""
    access = media_access(base_dir)
    path = _local_path(value, access)
    if not os.path.lexists(path):
        return None
    _confined(value, path, access, where, kind)
    try:
        error = _special_file(path, where, kind)
    except OSError as err:  # a dangling symlink, no permission
        raise MediaError(f"{where}: the {kind} path {path} cannot be read ({err})") from err
    if error is not None:
        raise error
    return path


def _base64_payload(value: str) -> bytes | None:
    """The bytes of a ``data:`` URL or a bare base64 string (standard or URL-safe
    alphabet, strictly validated), or None when it is not one."""
    payload = value.partition(",")[2] if value.startswith("data:") else value
    compact = "".join(payload.split())
    if not compact:
        return None
    padded = compact + "=" * (-len(compact) % 4)
    for text in (padded, padded.replace("-", "+").replace("_", "/")):
        try:
            return base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            continue
    return None


def _source_of(value: Any, where: str, base_dir: Any, kind: str) -> bytes | str:
    """Bytes or a local file path for a string, path, bytes or ``{"bytes", "path"}`` dict.
    A string that names no file is read as base64 when it decodes as such."""
    if isinstance(value, Mapping):
        if value.get("bytes") is not None:
            return bytes(value["bytes"])
        if value.get("path") is not None:
            return _source_of(value["path"], where, base_dir, kind)
        raise MediaError(f"{where}: a {kind} dict needs 'bytes' or 'path' (both are None)")
    if isinstance(value, (bytes, bytearray, memoryview)):
        return bytes(value)
    value = os.fspath(value)
    if value.startswith("data:"):
        data = _base64_payload(value)
        if data is None:
            raise MediaError(f"{where}: the data: URL holds no valid base64 {kind} data")
        return data
    scheme = urlparse(value).scheme
    if scheme in _REMOTE_SCHEMES:
        raise MediaError(
            f"{where}: remote {kind} URLs ({scheme}://) are not fetched during collation; "
            "download the data first and pass a path, bytes or the decoded data"
        )
    path = checked_path(value, where, base_dir, kind)
    if path is not None:
        return path
    data = None if value.startswith("file:") else _base64_payload(value)
    if data is None or not _decodable_image_or_audio(data):
        access = media_access(base_dir)
        path = _local_path(value, access)
        _confined(value, path, access, where, kind)
        hint = (
            ""
            if access.base_dir is not None or os.path.isabs(path)
            else " (relative paths: pass base_dir)"
        )
        raise MediaError(f"{where}: {kind} file not found: {path}{hint}")
    return data


def _decodable_image_or_audio(data: bytes) -> bool:
    """Whether decoded base64 bytes start like an image or audio file (so a string
    naming a missing file is reported as such, not as undecodable data)."""
    try:
        with Image.open(io.BytesIO(data)):
            return True
    except Exception:  # noqa: BLE001 - not an image
        pass
    heads = (b"RIFF", b"fLaC", b"OggS", b"ID3", b"\xff\xfb", b"\xff\xf3", b"\xff\xf2")
    return data.startswith(heads) or data[4:8] == b"ftyp"


# --------------------------------------------------------------------------- images


def _opened(
    source: bytes | str, where: str, limits: Mapping[str, float] | None = None
) -> Image.Image:
    """A decoded image from bytes or a path, its size checked from the header (PIL's
    decompression-bomb limit, the processor's ``limits``) before any pixel is decoded."""
    try:
        with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
            _check_pixels(image.width, image.height, where)
            if limits:
                check_image_limits(image, limits, where)
            image.load()
            # A decoded image owns its pixels once loaded (leaving the block closes only
            # the file); one memory-mapped from its file (uncompressed formats) is copied
            # so that it does not change with the file.
            mapped = image.readonly or getattr(image, "map", None) is not None
            return image.copy() if isinstance(source, str) and mapped else image
    except Image.DecompressionBombError as err:
        raise MediaError(f"{where}: {err}") from err
    except MediaError:
        raise
    except _PIL_ERRORS as err:
        if isinstance(source, str):
            raise MediaError(f"{where}: {source} is not a readable image ({err})") from err
        raise MediaError(f"{where}: the image data cannot be decoded ({err})") from err


def _check_pixels(width: int, height: int, where: str) -> None:
    """PIL's decompression-bomb limit (``Image.MAX_IMAGE_PIXELS``), as an error."""
    limit = Image.MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        raise MediaError(
            f"{where}: the image is {width}x{height} = {width * height} pixels, over PIL's "
            f"decompression-bomb limit of {limit} (PIL.Image.MAX_IMAGE_PIXELS); shrink it "
            "when building the dataset, or raise that limit if you trust the data"
        )


def _scaled_to_uint8(array: np.ndarray, where: str) -> np.ndarray:
    """uint8 pixels from an integer or float array, scaled by its range: uint8 as is,
    uint16 by 65535, bool to 0/255, other integers only within 0-255, floats only
    finite and within [0, 1]. Anything else is a MediaError (never clipped)."""
    if array.dtype == np.uint8:
        return array
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if array.dtype.kind in "iu":
        if array.dtype in (np.uint16, np.dtype(">u2"), np.dtype("<u2")):
            return np.round(array.astype(np.float64) / 257.0).astype(np.uint8)
        low, high = (int(array.min()), int(array.max())) if array.size else (0, 0)
        if low < 0 or high > 255:
            raise MediaError(
                f"{where}: integer pixels of dtype {array.dtype} span {low}..{high}; pass "
                "uint8 (0-255), uint16 (0-65535) or floats in [0, 1]"
            )
        return array.astype(np.uint8)
    if array.dtype.kind == "f":
        values = array.astype(np.float64)
        if not np.isfinite(values).all():
            raise MediaError(f"{where}: the image holds NaN or infinite values")
        low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
        if low < 0.0 or high > 1.0:
            raise MediaError(
                f"{where}: float pixels span {low:g}..{high:g}, outside [0, 1]; scale them to "
                "[0, 1] (or pass uint8) when building the dataset"
            )
        return np.round(values * 255.0).astype(np.uint8)
    raise MediaError(f"{where}: pixels of dtype {array.dtype} are not an image")


def _from_array(value: Any, where: str) -> Image.Image:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.ndim == 3 and array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
        array = np.moveaxis(array, 0, -1)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
        raise MediaError(
            f"{where}: an array of shape {array.shape} is not an image; pass (H, W), "
            "(H, W, 3|4) or (3|4, H, W)"
        )
    if 0 in array.shape:
        raise MediaError(f"{where}: the image is empty (shape {array.shape})")
    _check_pixels(array.shape[1], array.shape[0], where)
    return Image.fromarray(np.ascontiguousarray(_scaled_to_uint8(array, where)))


def _high_depth_as_8bit(image: Image.Image, where: str) -> Image.Image:
    """An 8-bit grayscale image from a 16-bit (``I;16*``, ``I``) or float (``F``) one,
    scaled by its range: 16-bit by 65535, ``I`` must hold 0-65535, ``F`` [0, 1]."""
    array = np.asarray(image)
    if image.mode == "F":
        return Image.fromarray(_scaled_to_uint8(array, where))
    if image.mode == "I" and array.size and (array.min() < 0 or array.max() > 65535):
        raise MediaError(
            f"{where}: a 32-bit integer image spans {array.min()}..{array.max()}, outside "
            "the 16-bit range 0-65535 it is read with"
        )
    return Image.fromarray(_scaled_to_uint8(array.astype(np.uint16), where))


def _as_rgb(image: Image.Image, where: str) -> Image.Image:
    if image.mode.startswith("I") or image.mode == "F":
        image = _high_depth_as_8bit(image, where)
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        return background
    return image.convert("RGB")


_TRANSPOSED = range(2, 9)
"""EXIF orientations other than upright (1): the ones ``exif_transpose`` turns."""


def _upright(image: Image.Image) -> Image.Image:
    """``image`` turned upright by its EXIF orientation: ``ImageOps.exif_transpose``
    where it has one other than 1, else the image itself (``exif_transpose`` would
    return a copy of every pixel, about 0.15 ms for a 448² image; nothing downstream
    modifies the image in place)."""
    if image.getexif().get(ExifTags.Base.Orientation, 1) not in _TRANSPOSED:
        return image
    return ImageOps.exif_transpose(image)


def _is_source(value: Any) -> bool:
    """Whether ``value`` is file data or a reference to it (not pixels)."""
    if isinstance(value, Mapping):
        return not {"bytes", "path"}.isdisjoint(value)
    return isinstance(value, (bytes, bytearray, memoryview, str, os.PathLike))


def load_image(
    value: Any,
    where: str = "image",
    base_dir: BaseDir = None,
    limits: Mapping[str, float] | None = None,
) -> Image.Image:
    """An RGB PIL image from any supported form (see the module), upright by its EXIF
    orientation; a MediaError naming ``where`` otherwise. Its size is checked against
    PIL's decompression-bomb limit and the processor's ``limits`` from the header,
    before any pixel is decoded (a lazily opened PIL image included)."""
    try:
        if isinstance(value, Image.Image):
            image = value
            _check_pixels(image.width, image.height, where)  # the header's size, not decoded
            if limits:
                check_image_limits(image, limits, where)
            image.load()  # a closed or truncated image fails here
        elif _is_source(value):
            image = _opened(_source_of(value, where, base_dir, "image"), where, limits)
        elif hasattr(value, "__array__"):
            image = _from_array(value, where)
            if limits:
                check_image_limits(image, limits, where)
        else:
            raise MediaError(f"{where}: unsupported image type {type(value).__name__}")
        if image.width == 0 or image.height == 0:
            raise MediaError(f"{where}: the image is empty ({image.width}x{image.height})")
        return _as_rgb(_upright(image), where)
    except MediaError:
        raise
    except Image.DecompressionBombError as err:
        raise MediaError(f"{where}: {err}") from err
    except (*_PIL_ERRORS, TypeError, KeyError) as err:
        reason = "the image is closed" if "closed image" in str(err) else str(err)
        raise MediaError(
            f"{where}: the image cannot be read ({type(err).__name__}: {reason})"
        ) from err


def check_image_limits(image: Image.Image, limits: Mapping[str, float], where: str) -> None:
    """Refuses an image outside ``limits`` (the profile's ``image_limits``), naming them."""
    ratio_limit = limits.get("max_aspect_ratio")
    if ratio_limit is not None:
        ratio = max(image.width, image.height) / min(image.width, image.height)
        if ratio >= ratio_limit:
            raise MediaError(
                f"{where}: the image is {image.width}x{image.height}, an aspect ratio of "
                f"{ratio:g}; the processor needs one below {ratio_limit:g}; crop or pad it"
            )


# --------------------------------------------------------------------------- videos


def load_video(value: Any, where: str = "video", base_dir: BaseDir = None) -> Any:
    """Frames of a video: a uint8 array ``(T, H, W, C)`` or a list of RGB images.
    Paths are passed through for the processor's own decoder."""
    if isinstance(value, (str, os.PathLike)):
        text = os.fspath(value)
        path = checked_path(text, where, base_dir, "video")
        if path is None:
            access = media_access(base_dir)
            path = _local_path(text, access)
            _confined(text, path, access, where, "video")
            raise MediaError(f"{where}: video file not found: {path}")
        return path
    if isinstance(value, (list, tuple)):
        if not value:
            raise MediaError(f"{where}: the video has no frames")
        return [load_image(frame, f"{where}, frame {i}", base_dir) for i, frame in enumerate(value)]
    if hasattr(value, "__array__"):
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        array = np.asarray(value)
        if array.ndim != 4 or 0 in array.shape:
            raise MediaError(
                f"{where}: a video array must be (T, H, W, C) with no empty axis, got {array.shape}"
            )
        return _scaled_to_uint8(array, where)
    raise MediaError(f"{where}: unsupported video type {type(value).__name__}")


# --------------------------------------------------------------------------- audio


def _wav(source: bytes | str, where: str) -> tuple[np.ndarray, int]:
    """A PCM WAV file as a mono float32 waveform and its rate (standard library only)."""
    try:
        with wave.open(io.BytesIO(source) if isinstance(source, bytes) else source) as f:
            rate, width, channels = f.getframerate(), f.getsampwidth(), f.getnchannels()
            frames = f.readframes(f.getnframes())
    except (wave.Error, EOFError, OSError) as err:
        raise MediaError(f"{where}: not a readable WAV file ({err})") from err
    kinds = {1: (np.uint8, 128.0, 128.0), 2: ("<i2", 0.0, 32768.0), 4: ("<i4", 0.0, 2.0**31)}
    if width not in kinds:
        raise MediaError(f"{where}: {8 * width}-bit WAV is not supported; use 8, 16 or 32-bit PCM")
    dtype, offset, scale = kinds[width]
    samples = (np.frombuffer(frames, dtype=dtype).astype(np.float32) - offset) / scale
    return samples.reshape(-1, channels).mean(axis=1), rate


def _is_wav(source: bytes | str) -> bool:
    if isinstance(source, bytes):
        return source[:4] == b"RIFF" and source[8:12] == b"WAVE"
    with open(source, "rb") as f:
        head = f.read(12)
    return head[:4] == b"RIFF" and head[8:12] == b"WAVE"


def _decoded_audio(
    source: bytes | str, sampling_rate: int | None, where: str
) -> tuple[np.ndarray, int | None]:
    """Waveform (and its rate, None when resampled to ``sampling_rate``) of an audio
    file: transformers' ``load_audio`` when its backend is installed, WAV by the
    standard library otherwise; any other format then needs the ``audio`` extra."""
    from transformers.utils import is_soundfile_available, is_torchcodec_available

    if is_soundfile_available() or is_torchcodec_available():
        from transformers.audio_utils import load_audio as hf_load_audio

        rate = sampling_rate or 16_000
        text = source if isinstance(source, str) else base64.b64encode(source).decode()
        try:
            return np.asarray(hf_load_audio(text, sampling_rate=rate), dtype=np.float32), rate
        except Exception as err:  # noqa: BLE001 - decoders raise many kinds
            raise MediaError(f"{where}: the audio cannot be decoded ({err})") from err
    if _is_wav(source):
        return _wav(source, where)
    raise ImportError(
        f"{where}: decoding this audio file needs soundfile (or torchcodec): {AUDIO_EXTRA}; "
        "or pass the waveform as {'array': ..., 'sampling_rate': ...}"
    )


_AUDIO_SCALES = {
    # dtype -> (offset, scale): PCM integers scaled by their range into [-1, 1), as
    # soundfile and WAV readers do; unsigned 8-bit PCM is centred on 128
    np.dtype(np.int8): (0.0, 128.0),
    np.dtype(np.uint8): (128.0, 128.0),
    np.dtype(np.int16): (0.0, 32768.0),
    np.dtype(np.uint16): (32768.0, 32768.0),
    np.dtype(np.int32): (0.0, 2.0**31),
}


def _integer_audio_scaled(array: np.ndarray, where: str) -> np.ndarray:
    """A float32 waveform from integer PCM samples, scaled by their dtype's range
    (int16 / 32768, int32 / 2**31, uint8 (x - 128) / 128, like integer images)."""
    dtype = array.dtype.newbyteorder("=")
    if dtype not in _AUDIO_SCALES:
        raise MediaError(
            f"{where}: integer audio of dtype {array.dtype} has no PCM range to scale by; "
            "pass int16, int32 or uint8 PCM, or floats in [-1, 1]"
        )
    offset, scale = _AUDIO_SCALES[dtype]
    return ((array.astype(np.float64) - offset) / scale).astype(np.float32)


def load_audio(
    value: Any,
    where: str = "audio",
    base_dir: BaseDir = None,
    sampling_rate: int | None = None,
) -> tuple[np.ndarray, int | None]:
    """``(waveform, sampling_rate)`` from a dict (``{"array", "sampling_rate"}`` or
    datasets' undecoded ``{"bytes", "path"}``), an ``(array, rate)`` pair, an array,
    or a path / bytes / base64 audio file (decoded at ``sampling_rate``). The waveform
    is mono float32, non-empty and finite."""
    rate = None
    if isinstance(value, Mapping):
        if value.get("array") is not None:
            value, rate = value["array"], value.get("sampling_rate")
        elif value.get("bytes") is None and value.get("path") is None:
            raise MediaError(
                f"{where}: an audio dict needs 'array' (and 'sampling_rate'), or 'bytes'/'path'"
            )
    elif isinstance(value, (list, tuple)) and len(value) == 2 and np.isscalar(value[1]):
        value, rate = value
    if isinstance(value, (str, os.PathLike, bytes, bytearray, Mapping)):
        source = _source_of(value, where, base_dir, "audio")
        value, rate = _decoded_audio(source, sampling_rate, where)
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray) and value.dtype.kind in "iub":
        value = _integer_audio_scaled(value, where)
    try:
        waveform = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError) as err:
        raise MediaError(f"{where}: the audio is not a numeric array ({err})") from err
    if waveform.ndim == 2:
        waveform = waveform.mean(axis=0 if waveform.shape[0] < waveform.shape[1] else 1)
    if waveform.ndim != 1 or waveform.size == 0:
        raise MediaError(
            f"{where}: the waveform must be a non-empty 1-D array, got {waveform.shape}"
        )
    if not np.isfinite(waveform).all():
        bad = int((~np.isfinite(waveform)).sum())
        raise MediaError(f"{where}: the waveform holds {bad} NaN or infinite samples")
    if rate is not None and (not np.isscalar(rate) or not math.isfinite(float(rate)) or rate <= 0):
        raise MediaError(f"{where}: the sampling rate must be a positive number, got {rate!r}")
    return waveform, int(rate) if rate is not None else None


# --------------------------------------------------------------------------- per sample


def images_of(
    conversation: Sequence[Mapping[str, Any]],
    index: int,
    base_dir: BaseDir = None,
    limits: Mapping[str, float] | None = None,
) -> list[Image.Image]:
    """The images of sample ``index``, loaded as RGB (and checked against ``limits``)."""
    images = []
    for k, v in enumerate(media_of(conversation, index, ("image",)).images):
        where = f"sample {index}, image {k}"
        images.append(load_image(v, where, base_dir, limits))
    return images


def videos_of(
    conversation: Sequence[Mapping[str, Any]],
    index: int,
    base_dir: BaseDir = None,
    limits: Mapping[str, float] | None = None,
) -> list[Any]:
    """The videos of sample ``index``, loaded."""
    return [
        load_video(v, f"sample {index}, video {k}", base_dir)
        for k, v in enumerate(media_of(conversation, index, ("video",)).videos)
    ]


def waveform_at(
    value: Any,
    sampling_rate: int | None,
    where: str = "audio",
    base_dir: BaseDir = None,
    min_samples: int | None = None,
) -> np.ndarray:
    """The waveform of an audio item, its sampling rate checked against ``sampling_rate``
    (audio is never resampled silently) and its length against ``min_samples``."""
    waveform, rate = load_audio(value, where, base_dir, sampling_rate)
    if rate is not None and sampling_rate is not None and rate != sampling_rate:
        raise MediaError(
            f"{where}: the audio is sampled at {rate} Hz but the processor expects "
            f"{sampling_rate} Hz; resample it when building the dataset"
        )
    if min_samples is not None and waveform.size < min_samples:
        raise MediaError(
            f"{where}: the waveform has {waveform.size} samples, fewer than the processor's "
            f"analysis window of {min_samples} samples; pad it or drop the sample"
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
    base_dir: BaseDir = None,
    limits: Mapping[str, float] | None = None,
) -> list[list[Any]]:
    """The loaded images or videos (``kind``) of each sample, checked against the
    ``placeholder`` count of its rendered text (and images against ``limits``)."""
    load = {"image": images_of, "video": videos_of}[kind]
    items = [load(c, i, base_dir, limits) for c, i in zip(conversations, indices)]
    check_placeholder_counts(texts, placeholder, [len(x) for x in items], kind, indices)
    return items


def flattened(per_sample: Sequence[Sequence[Any]]) -> list[Any]:
    """Media of all samples in batch order (what processors take)."""
    return [x for sample in per_sample for x in sample]
