"""Image sizes parsed from JPEG and PNG headers (vlm_collate.packing.headers) equal the
size PIL reports for the same file or bytes; anything unusual is left to PIL (None)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from vlm_collate.packing.headers import file_header_size, header_size
from vlm_collate.packing.sampler import _image_size


def _picture(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB").convert(mode)


def _encoded(image: Image.Image, format: str, **kwargs) -> bytes:
    out = io.BytesIO()
    image.save(out, format=format, **kwargs)
    return out.getvalue()


def _pil_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.height, image.width


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010E] = "x" * 3000  # a long description: the APP1 segment is kilobytes long
    return exif.tobytes()


CASES = {
    "baseline": lambda: _encoded(_picture(640, 480), "JPEG", quality=90),
    "progressive": lambda: _encoded(_picture(333, 517), "JPEG", progressive=True),
    "optimized 4:4:4": lambda: _encoded(_picture(101, 37), "JPEG", optimize=True, subsampling=0),
    "grayscale": lambda: _encoded(_picture(250, 90, "L"), "JPEG"),
    "cmyk": lambda: _encoded(_picture(120, 80, "CMYK"), "JPEG"),
    # headers past the first read: a 9 KB ICC profile and a long EXIF block before the frame
    "icc profile": lambda: _encoded(_picture(64, 48), "JPEG", icc_profile=b"\0" * 9000),
    "exif rotated": lambda: _encoded(_picture(300, 200), "JPEG", exif=_exif(6)),
    "png rgb": lambda: _encoded(_picture(77, 55), "PNG"),
    "png palette": lambda: _encoded(_picture(31, 90, "P"), "PNG"),
    "png rgba": lambda: _encoded(_picture(12, 400, "RGBA"), "PNG"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_header_size_equals_pil_for_bytes_and_files(name, tmp_path):
    data = CASES[name]()
    expected = _pil_size(data)
    assert header_size(data) == expected
    path = tmp_path / "image.bin"
    path.write_bytes(data)
    assert file_header_size(path) == expected
    assert file_header_size(str(path)) == expected
    assert _image_size(str(path), "x") == expected
    assert _image_size(data, "x") == expected


def test_fill_bytes_before_a_marker_are_skipped_as_pil_does():
    data = CASES["baseline"]()
    # 0xFF fill bytes may precede any marker (JPEG F.1.2.3); insert some after the SOI
    padded = data[:2] + b"\xff\xff\xff" + data[2:]
    assert _pil_size(padded) == _pil_size(data)
    assert header_size(padded) == _pil_size(data)


def test_other_formats_and_broken_headers_are_left_to_pil(tmp_path):
    webp = _encoded(_picture(50, 40), "WEBP")
    gif = _encoded(_picture(50, 40, "P"), "GIF")
    assert header_size(webp) is None and header_size(gif) is None
    assert _image_size(webp, "x") == (40, 50)  # PIL reads them
    jpeg = CASES["baseline"]()
    cut = jpeg[:200]  # markers end before the frame header
    assert header_size(cut) is None
    (tmp_path / "cut.jpg").write_bytes(cut)
    assert file_header_size(tmp_path / "cut.jpg") is None
    junk = jpeg[:2] + b"\x00\x00" + jpeg[2:]  # not a marker where one must be
    assert header_size(junk) is None
    escaped = jpeg[:2] + b"\xff\x00" + jpeg[2:]  # PIL skips it; the parser leaves it to PIL
    assert header_size(escaped) is None
    assert header_size(b"") is None and header_size(b"\xff\xd8\xff") is None
    with pytest.raises(OSError):
        file_header_size(tmp_path / "missing.jpg")


def test_a_12_bit_frame_is_left_to_pil():
    """PIL refuses JPEGs of other than 8 bits per sample: the parser does not claim a
    size for them, so the estimate fails where the collator would."""
    data = bytearray(CASES["baseline"]())
    sof = data.index(b"\xff\xc0")
    data[sof + 4] = 12  # sample precision
    assert header_size(bytes(data)) is None
