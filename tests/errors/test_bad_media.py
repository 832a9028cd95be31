"""Bad media get a MediaError naming the sample and the item (and why); the original
exception is chained where one escaped. Odd but readable images are converted."""

from __future__ import annotations

import base64
import io
import re
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from helpers import make_image, one_turn
from vlm_collate import (
    default_collate_fn,
    phi4_mm_collate_fn,
    qwen2_5_collate_fn,
    qwen3_omni_collate_fn,
    testing,
)
from vlm_collate.errors import MediaError


def chat(*items, reply: str = "ok") -> dict:
    return one_turn(*items, "what?", reply=reply)


GOOD = chat()


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width x height`` (no real pixel data)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def closed_image() -> Image.Image:
    image = make_image()
    image.close()
    return image


IMAGE_CASES = [
    ("extreme aspect ratio", lambda: make_image(10000, 10), r"aspect ratio of 1000.*below 200"),
    ("bomb error", lambda: png_header(40000, 40000), "decompression"),
    ("bomb warning", lambda: png_header(10000, 10000), "decompression-bomb limit"),
    ("closed image", closed_image, "closed"),
]


@pytest.mark.parametrize(("case", "value", "needle"), IMAGE_CASES, ids=[c[0] for c in IMAGE_CASES])
def test_bad_images_name_sample_and_item(qwen_processor, case, value, needle):
    with pytest.raises(MediaError, match=r"sample 1, image 0") as err:
        qwen2_5_collate_fn([GOOD, chat({"type": "image", "image": value()})], qwen_processor)
    assert re.search(needle, str(err.value)), str(err.value)


def test_image_errors_are_clear(qwen_processor, tmp_path):
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG not really")
    cases = [
        (str(tmp_path / "missing.png"), "image file not found"),
        (str(corrupt), "not a readable image"),
        (b"garbage bytes", "cannot be decoded"),
        (np.zeros((0, 4, 3), dtype=np.uint8), "empty"),
        ("https://example.com/cat.png", "remote image URLs"),
    ]
    for value, needle in cases:
        with pytest.raises(MediaError, match="sample 1, image 0") as err:
            qwen2_5_collate_fn(
                [GOOD, one_turn("Is it blue?", reply="Yes", images=[value])], qwen_processor
            )
        assert needle in str(err.value)


def test_empty_video_axis_names_sample_and_item(qwen_processor):
    video = {"type": "video", "video": np.zeros((2, 0, 64, 3), np.uint8)}
    with pytest.raises(MediaError, match=r"sample 1, video 0: .*\(2, 0, 64, 3\)"):
        qwen2_5_collate_fn([GOOD, chat(video)], qwen_processor)


@pytest.fixture(scope="module")
def omni():
    return testing.qwen3_omni_processor()


def audio(array) -> dict:
    return {"type": "audio", "audio": {"array": array, "sampling_rate": 16_000}}


def test_short_and_non_finite_audio_name_sample_and_item(omni):
    good = chat(audio(testing.waveform(0.2)))
    with pytest.raises(MediaError, match=r"sample 1, audio 0: the waveform has 16 samples"):
        qwen3_omni_collate_fn([good, chat(audio(np.zeros(16, np.float32)))], omni)
    broken = testing.waveform(0.2)
    broken[5] = np.nan
    with pytest.raises(MediaError, match=r"sample 1, audio 0: .*NaN or infinite"):
        qwen3_omni_collate_fn([good, chat(audio(broken))], omni)


def test_processor_failure_names_the_sample_and_chains_the_original():
    processor = testing.phi4_multimodal_processor()
    wide = {"type": "image", "image": make_image(1000, 5)}
    batch = [chat({"type": "image", "image": make_image()}), chat(wide)]
    with pytest.raises(MediaError, match=r"sample 1: the processor failed on it") as err:
        phi4_mm_collate_fn(batch, processor)
    assert "image 0 (1000x5 RGB)" in str(err.value)
    assert isinstance(err.value.__cause__, ValueError)
    assert "aspect ratio" in str(err.value.__cause__)


def test_image_to_a_processor_without_image_support_is_refused():
    tokenizer = testing.qwen2_tokenizer()
    example = chat({"type": "image", "image": make_image()})
    with pytest.raises(MediaError, match=r"sample 0, image 0: .*takes no images"):
        default_collate_fn([example], tokenizer)


def test_odd_image_modes_and_forms_are_converted(qwen_processor, tmp_path):
    png = io.BytesIO()
    make_image(seed=3).save(png, format="PNG")
    path = tmp_path / "img.png"
    path.write_bytes(png.getvalue())
    images = [
        make_image(mode="L"),
        make_image(mode="RGBA"),
        make_image().convert("P"),
        png.getvalue(),
        f"file://{path}",
        "data:image/png;base64," + base64.b64encode(png.getvalue()).decode(),
        np.asarray(make_image(seed=4)),
    ]
    out = qwen2_5_collate_fn(
        [one_turn("Is it blue?", reply="Yes", images=images)], qwen_processor, shift=False
    )
    grid = out["image_grid_thw"]
    assert grid.shape == (len(images), 3)
    media = qwen_processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    assert int((out["input_ids"] == media).sum()) == int(grid.prod(dim=1).sum()) // 4
