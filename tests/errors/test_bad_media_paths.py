"""Media are read safely: ``base_dir`` confines paths (symlinks resolved),
``allow_absolute_paths`` decides absolute paths and ``file://`` URLs, data that is not a
path is never refused by those rules, a directory / FIFO / device gets its own message
(a FIFO is never opened), an image's size is checked from its header before any pixel
is decoded, and integer audio is scaled by its range. Every refusal is a MediaError
naming the sample and saying what to do."""

from __future__ import annotations

import base64
import io
import os
import signal
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from helpers import make_image, one_turn, png_bytes
from vlm_collate import qwen2_5_collate_fn
from vlm_collate.errors import MediaError
from vlm_collate.pipeline.media import MediaAccess, load_audio, load_image, load_video


def chat(item: dict) -> dict:
    return one_turn(item, "what?", reply="ok")


def image_row(value) -> dict:
    return chat({"type": "image", "image": value})


@pytest.fixture
def tree(tmp_path):
    """``root/`` (the base_dir, holding ``in.png`` and a symlink leading out) beside
    ``outside.png``."""
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    data = png_bytes(make_image(32, 32))
    (root / "in.png").write_bytes(data)
    (tmp_path / "outside.png").write_bytes(data)
    (root / "sub" / "link.png").symlink_to(tmp_path / "outside.png")
    return root


def refused(processor, value, match, **options) -> str:
    """The message of the MediaError that collating ``value`` (as sample 1) raises."""
    rows = [image_row(make_image(32, 32)), image_row(value)]
    with pytest.raises(MediaError, match=match) as err:
        qwen2_5_collate_fn(rows, processor, **options)
    message = str(err.value)
    assert "sample 1, image 0" in message  # names the sample and item
    return message


def test_relative_path_escaping_base_dir_is_refused(qwen_processor, tree):
    message = refused(qwen_processor, "../outside.png", "outside base_dir", base_dir=str(tree))
    assert "fix the path" in message and str(tree.parent / "outside.png") in message
    message = refused(qwen_processor, "sub/../../outside.png", "outside base_dir", base_dir=tree)
    assert "fix the path" in message


def test_symlink_leading_out_of_base_dir_is_refused(qwen_processor, tree):
    message = refused(qwen_processor, "sub/link.png", "outside base_dir", base_dir=str(tree))
    assert str(tree.parent / "outside.png") in message  # the resolved target is named


def test_missing_path_escaping_base_dir_says_so_not_just_not_found(qwen_processor, tree):
    refused(qwen_processor, "../missing.png", "outside base_dir", base_dir=str(tree))


def test_absolute_paths_and_file_urls_with_base_dir(qwen_processor, tree):
    outside = str(tree.parent / "outside.png")
    for value in (outside, f"file://{outside}"):
        message = refused(qwen_processor, value, "outside base_dir", base_dir=str(tree))
        assert "allow_absolute_paths=True" in message
        batch = qwen2_5_collate_fn(
            [image_row(value)], qwen_processor, base_dir=str(tree), allow_absolute_paths=True
        )
        assert batch["image_grid_thw"].shape == (1, 3)
    inside = str(tree / "in.png")  # an absolute path inside base_dir is confined already
    for value in (inside, f"file://{inside}"):
        batch = qwen2_5_collate_fn([image_row(value)], qwen_processor, base_dir=str(tree))
        assert batch["image_grid_thw"].shape == (1, 3)


def test_absolute_paths_without_base_dir(qwen_processor, tree):
    outside = str(tree.parent / "outside.png")
    batch = qwen2_5_collate_fn([image_row(outside)], qwen_processor)  # backwards compatible
    assert batch["image_grid_thw"].shape == (1, 3)
    for value in (outside, f"file://{outside}"):
        message = refused(qwen_processor, value, "allow_absolute_paths=False",
                          allow_absolute_paths=False)  # fmt: skip
        assert "relative to base_dir" in message


def test_data_that_is_not_a_path_is_never_refused(qwen_processor, tree):
    image = make_image(40, 30, seed=3)
    data = png_bytes(image)
    jpeg = io.BytesIO()
    image.save(jpeg, format="JPEG")
    jpeg_b64 = base64.b64encode(jpeg.getvalue()).decode()
    assert jpeg_b64.startswith("/9j/")  # looks like an absolute path
    values = [
        data,
        bytearray(data),
        np.asarray(image),
        image,
        Image.open(io.BytesIO(data)),
        {"bytes": data, "path": "../../etc/elsewhere.png"},  # datasets: bytes win
        {"bytes": data, "path": "/abs/elsewhere.png"},
        jpeg_b64,
        "data:image/png;base64," + base64.b64encode(data).decode(),
    ]
    for access in ({"base_dir": str(tree)}, {"allow_absolute_paths": False},
                   {"base_dir": str(tree), "allow_absolute_paths": False}):  # fmt: skip
        batch = qwen2_5_collate_fn([image_row(v) for v in values], qwen_processor, **access)
        assert batch["image_grid_thw"].shape == (len(values), 3)


def test_a_directory_gets_its_own_message(qwen_processor, tree):
    message = refused(qwen_processor, "sub", "is a directory", base_dir=str(tree))
    assert "regular file" in message and "fix the path" in message
    assert "not found" not in message


def test_a_fifo_gets_its_own_message_and_is_never_opened(qwen_processor, tree):
    os.mkfifo(tree / "pipe.png")
    previous = signal.signal(signal.SIGALRM, lambda *_: pytest.fail("the FIFO was opened"))
    signal.alarm(20)
    try:
        message = refused(qwen_processor, "pipe.png", "FIFO", base_dir=str(tree))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert "fix the path" in message


@pytest.mark.skipif(not os.path.exists("/dev/null"), reason="no /dev/null on this system")
def test_a_device_gets_its_own_message(qwen_processor):
    message = refused(qwen_processor, "/dev/null", "is a device")
    assert "fix the path" in message


def test_videos_and_audio_are_confined_too(tree):
    (tree / "clip.mp4").write_bytes(b"\x00" * 16)
    assert load_video("clip.mp4", "sample 2, video 0", MediaAccess(str(tree))).endswith("clip.mp4")
    with pytest.raises(MediaError, match=r"sample 2, video 0: .*outside base_dir.*fix the path"):
        load_video("../outside.png", "sample 2, video 0", str(tree))
    with pytest.raises(MediaError, match=r"sample 2, video 0: .*is a directory"):
        load_video("sub", "sample 2, video 0", str(tree))
    with pytest.raises(MediaError, match=r"sample 3, audio 0: .*outside base_dir.*fix the path"):
        load_audio("../outside.wav", "sample 3, audio 0", str(tree))
    with pytest.raises(MediaError, match=r"sample 3, audio 0: .*allow_absolute_paths=True"):
        load_audio(str(tree.parent / "outside.png"), "sample 3, audio 0", str(tree))


# --------------------------------------------------------------------------- image size


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height``, with one tiny (invalid) data chunk:
    decoding it would fail, so only a header-only check can refuse it by size."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def loads(monkeypatch):
    """Counts calls of ``PIL.Image.Image.load`` (each full decode goes through it)."""
    calls = []
    original = Image.Image.load

    def counted(self, *args, **kwargs):
        calls.append(self.size)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "load", counted)
    return calls


def test_a_huge_image_is_refused_from_its_header(qwen_processor, tree, loads, recwarn):
    header = png_header(12000, 12000)
    (tree / "huge.png").write_bytes(header)
    for value in (header, "huge.png", Image.open(io.BytesIO(header))):
        loads.clear()
        message = refused(qwen_processor, value, "decompression-bomb limit", base_dir=str(tree))
        assert "12000x12000" in message and "shrink it" in message
        assert not [size for size in loads if size == (12000, 12000)]  # never decoded


def test_the_processors_limits_are_checked_from_the_header(qwen_processor, tree, loads):
    header = png_header(30000, 100)  # within PIL's limit, an aspect ratio Qwen refuses
    for value in (header, Image.open(io.BytesIO(header))):
        loads.clear()
        message = refused(qwen_processor, value, "aspect ratio")
        assert "crop or pad it" in message
        assert not [size for size in loads if size == (30000, 100)]


# --------------------------------------------------------------------------- audio


def test_integer_audio_is_scaled_by_its_range():
    cases = [
        (np.array([0, 16384, -32768, 32767], np.int16), [0.0, 0.5, -1.0, 32767 / 32768]),
        (np.array([0, 2**30, -(2**31)], np.int32), [0.0, 0.5, -1.0]),
        (np.array([128, 192, 0, 255], np.uint8), [0.0, 0.5, -1.0, 127 / 128]),
        (np.array([0.25, -0.5], np.float32), [0.25, -0.5]),  # floats as they are
    ]
    for array, expected in cases:
        for value in (array, {"array": array, "sampling_rate": 16_000}, (array, 16_000)):
            waveform, _ = load_audio(value, "sample 0, audio 0")
            assert waveform.dtype == np.float32
            np.testing.assert_allclose(waveform, expected, rtol=0, atol=1e-7)
    import torch

    waveform, _ = load_audio(torch.tensor([16384, -16384], dtype=torch.int16))
    np.testing.assert_allclose(waveform, [0.5, -0.5])


def test_integer_audio_without_a_pcm_range_is_refused():
    with pytest.raises(MediaError, match=r"sample 4, audio 1: .*int64.*pass int16, int32"):
        load_audio(np.array([1, 2, 3], np.int64), "sample 4, audio 1")


def test_load_image_keeps_its_base_dir_argument(tree):
    assert load_image("in.png", base_dir=tree).size == (32, 32)
    with pytest.raises(MediaError, match="outside base_dir"):
        load_image("../outside.png", "sample 0, image 0", tree)
