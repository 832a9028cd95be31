"""Image sizes from file headers without PIL's per-file set-up: JPEG (the last frame
header before the first scan, as PIL reads it) and PNG (``IHDR``) are parsed from the
first bytes of a file or a bytes object; anything else, and any JPEG whose markers are
not the plain ``FFxx`` + length sequence, returns ``None`` and the caller opens it with
PIL. The size is the one ``PIL.Image.open`` reports (no EXIF rotation applied)."""

from __future__ import annotations

import os
from typing import Any

_PNG = b"\x89PNG\r\n\x1a\n"
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
"""Frame-header markers (baseline, extended, progressive, lossless, arithmetic)."""
_FIRST_READ = 4096


def _jpeg_size(data: bytes | memoryview, more: Any = None) -> tuple[int, int] | None:
    """``(height, width)`` of the JPEG whose first bytes are ``data``; ``more(n)``
    returns the file's first ``n`` bytes when the markers reach past ``data``."""
    pos, size = 2, None
    while True:
        if pos + 4 > len(data):
            if more is None:
                return None
            data = more(max(2 * len(data), pos + 4))
            if pos + 4 > len(data):
                return None
        if data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # a fill byte before the marker
            pos += 1
            continue
        if marker == 0xDA:  # start of scan: the frame header came before it
            return size
        if marker < 0xC0 or 0xD0 <= marker <= 0xD9:
            return None  # not a marker with a length (junk, restart, TEM): PIL decides
        length = (data[pos + 2] << 8) | data[pos + 3]
        if length < 2:
            return None
        if marker in _SOF:
            end = pos + 2 + length
            if end > len(data):
                if more is None:
                    return None
                data = more(end)
                if end > len(data):
                    return None
            if length < 8 or data[pos + 4] != 8 or data[pos + 9] not in (1, 3, 4):
                return None  # too short, or a layout PIL refuses: PIL says why
            size = ((data[pos + 5] << 8) | data[pos + 6], (data[pos + 7] << 8) | data[pos + 8])
        pos += 2 + length


def _png_size(data: bytes | memoryview) -> tuple[int, int] | None:
    if len(data) < 24 or bytes(data[12:16]) != b"IHDR":
        return None
    width = int.from_bytes(data[16:20], "big")
    height = int.from_bytes(data[20:24], "big")
    return height, width


def header_size(value: bytes | bytearray | memoryview) -> tuple[int, int] | None:
    """``(height, width)`` of a JPEG or PNG given as bytes, else ``None``."""
    data = memoryview(value)
    if len(data) >= 3 and data[0] == 0xFF and data[1] == 0xD8 and data[2] == 0xFF:
        return _jpeg_size(data)
    if bytes(data[:8]) == _PNG:
        return _png_size(data)
    return None


def file_header_size(path: str | os.PathLike) -> tuple[int, int] | None:
    """``(height, width)`` of a JPEG or PNG file, read from its first bytes (more only
    when its markers reach further), else ``None``. ``OSError`` when it cannot be
    opened."""
    with open(path, "rb") as file:
        data = file.read(_FIRST_READ)
        if data[:3] == b"\xff\xd8\xff":

            def more(n: int) -> bytes:
                nonlocal data
                if n > len(data):
                    data += file.read(n - len(data))
                return data

            return _jpeg_size(data, more)
        if data[:8] == _PNG:
            return _png_size(data)
    return None


__all__ = ["file_header_size", "header_size"]
