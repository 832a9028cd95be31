"""Media loaded as the ecosystem loads them, from the formats datasets and users have."""

from __future__ import annotations

import base64
import io
import wave

import numpy as np
import pytest
from PIL import Image

from vlm_collate import default_collate_fn, qwen2_5_collate_fn, testing
from vlm_collate.errors import MediaError
from vlm_collate.pipeline.media import load_audio, load_image, load_video, waveform_at


def png_bytes(image: Image.Image) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def asymmetric(width: int = 40, height: int = 20) -> Image.Image:
    """Left half black, right half white: orientation is visible."""
    pixels = np.zeros((height, width, 3), dtype=np.uint8)
    pixels[:, width // 2 :] = 255
    return Image.fromarray(pixels)


def test_exif_orientation_is_applied_as_transformers_does():
    from transformers.image_utils import load_image as hf_load_image

    out = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    asymmetric().save(out, format="JPEG", exif=exif, quality=95)
    data = out.getvalue()
    ours = load_image(data)
    assert ours.size == (20, 40)  # upright: width and height swapped
    theirs = hf_load_image(base64.b64encode(data).decode())
    assert np.abs(np.asarray(ours, int) - np.asarray(theirs, int)).max() <= 2


def test_16bit_png_and_uint16_arrays_scale_by_their_range():
    ramp = (np.linspace(0, 65535, 64 * 48).reshape(48, 64)).astype(np.uint16)
    png = png_bytes(Image.fromarray(ramp))
    for value in (png, ramp, np.stack([ramp] * 3, axis=-1)):
        pixels = np.asarray(load_image(value))[..., 0].astype(int)
        expected = np.round(ramp / 257).astype(int)
        assert np.abs(pixels - expected).max() <= 1
        assert (pixels == 255).mean() < 0.05  # not saturated


def test_float_images_in_unit_range_scale_and_others_are_refused():
    values = np.linspace(0, 1, 48 * 64, dtype=np.float32).reshape(48, 64)
    for value in (Image.fromarray(values, mode="F"), values, np.stack([values] * 3)):
        pixels = np.asarray(load_image(value))[..., 0]
        assert pixels.max() == 255 and pixels.min() == 0
        assert abs(float(pixels.mean()) - 127.5) < 2
    for bad, needle in ((values * 255, "outside \\[0, 1\\]"), (values * np.nan, "NaN")):
        with pytest.raises(MediaError, match=needle):
            load_image(bad, "sample 2, image 1")
    with pytest.raises(MediaError, match="outside"):
        load_image(Image.fromarray(values * 4, mode="F"))


def test_integer_arrays_outside_8bit_are_refused_not_clipped():
    with pytest.raises(MediaError, match="span -3..9"):
        load_image(np.array([[-3, 9], [0, 1]], dtype=np.int32))
    assert np.asarray(load_image(np.full((4, 4), 200, dtype=np.int64)))[0, 0, 0] == 200


def test_datasets_image_dicts_relative_paths_and_base64(tmp_path):
    image = asymmetric()
    data = png_bytes(image)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "a.png").write_bytes(data)
    forms = [
        {"bytes": data, "path": None},
        {"bytes": None, "path": "sub/a.png"},
        {"bytes": data, "path": "ignored/when/bytes.png"},
        "sub/a.png",
        base64.b64encode(data).decode(),
        "data:image/png;base64," + base64.b64encode(data).decode(),
        f"file://{tmp_path / 'sub' / 'a.png'}",
    ]
    for value in forms:
        assert np.array_equal(np.asarray(load_image(value, base_dir=tmp_path)), np.asarray(image))
    tiny = Image.new("RGB", (1, 1), (9, 8, 7))
    short = base64.b64encode(png_bytes(tiny)).decode()
    assert len(short) < 120  # what the old length heuristic took for a path
    assert load_image(short).getpixel((0, 0)) == (9, 8, 7)
    with pytest.raises(MediaError, match=r"image file not found: .*missing\.png"):
        load_image("missing.png", "sample 0, image 0", base_dir=tmp_path)
    with pytest.raises(MediaError, match="pass base_dir"):
        load_image("nowhere/missing.png")
    with pytest.raises(MediaError, match="'bytes' or 'path'"):
        load_image({"bytes": None, "path": None})


def test_datasets_image_feature_decoded_and_not(qwen_processor, tmp_path):
    datasets = pytest.importorskip("datasets")
    image = asymmetric(64, 48)
    rows = [{"image": image, "text": "a"}]
    decoded = datasets.Dataset.from_list(rows).cast_column("image", datasets.Image())
    raw = decoded.cast_column("image", datasets.Image(decode=False))
    for dataset in (decoded, raw):
        value = dataset[0]["image"]
        example = {
            "conversation": [
                {"role": "user", "content": [{"type": "image", "image": value}]},
                {"role": "assistant", "content": "ok"},
            ]
        }
        batch = qwen2_5_collate_fn([example], qwen_processor, base_dir=str(tmp_path))
        assert batch["image_grid_thw"].shape == (1, 3)


def test_relative_paths_through_a_collate_function(qwen_processor, tmp_path):
    (tmp_path / "img.png").write_bytes(png_bytes(asymmetric(64, 48)))
    example = {
        "conversation": [
            {"role": "user", "content": [{"type": "image", "image": "img.png"}]},
            {"role": "assistant", "content": "ok"},
        ]
    }
    batch = qwen2_5_collate_fn([example], qwen_processor, base_dir=str(tmp_path))
    assert batch["image_grid_thw"].shape == (1, 3)


def wav_bytes(samples: np.ndarray, rate: int = 16_000) -> bytes:
    out = io.BytesIO()
    with wave.open(out, "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return out.getvalue()


def test_audio_from_paths_bytes_dicts_and_arrays(tmp_path):
    wave_ = testing.waveform(0.25)
    data = wav_bytes(wave_)
    (tmp_path / "a.wav").write_bytes(data)
    for value in ("a.wav", {"bytes": data, "path": None}, {"path": "a.wav"}, data):
        samples, rate = load_audio(value, base_dir=tmp_path, sampling_rate=16_000)
        assert rate == 16_000 and samples.shape == wave_.shape
        assert np.abs(samples - wave_).max() < 1e-3
    samples, rate = load_audio({"array": wave_, "sampling_rate": 16_000})
    assert rate == 16_000 and np.array_equal(samples, wave_)


def test_audio_formats_without_a_decoder_name_the_extra(tmp_path, monkeypatch):
    import transformers.utils as tu

    monkeypatch.setattr(tu, "is_soundfile_available", lambda: False)
    monkeypatch.setattr(tu, "is_torchcodec_available", lambda: False)
    (tmp_path / "a.flac").write_bytes(b"fLaC" + bytes(64))
    with pytest.raises(ImportError, match=r"vlm-collate\[audio\]"):
        load_audio("a.flac", "sample 0, audio 0", base_dir=tmp_path)


def test_non_finite_and_too_short_audio_are_refused():
    wave_ = testing.waveform(0.1)
    for bad in (np.nan, np.inf):
        broken = wave_.copy()
        broken[10] = bad
        with pytest.raises(MediaError, match="sample 3, audio 1: .*NaN or infinite"):
            waveform_at(broken, 16_000, "sample 3, audio 1")
    with pytest.raises(MediaError, match="16 samples, fewer than .* 400"):
        waveform_at(np.zeros(16, np.float32), 16_000, "sample 0, audio 0", min_samples=400)


def test_video_arrays_with_an_empty_axis_are_refused():
    with pytest.raises(MediaError, match=r"sample 1, video 0: .*\(2, 0, 64, 3\)"):
        load_video(np.zeros((2, 0, 64, 3), np.uint8), "sample 1, video 0")
    assert load_video(np.zeros((2, 8, 8, 3), np.uint16)).dtype == np.uint8


def test_default_collate_reads_media_items_through_the_media_module(tmp_path):
    processor = testing.qwen2_5_vl_processor()
    data = png_bytes(asymmetric(64, 48))
    (tmp_path / "x.png").write_bytes(data)
    for item in (
        {
            "type": "image",
            "image_url": {"url": "data:image/png;base64," + base64.b64encode(data).decode()},
        },
        {"type": "image", "data": data},
        {"type": "image", "path": "x.png"},
    ):
        example = {
            "conversation": [
                {"role": "user", "content": [item, {"type": "text", "text": "what?"}]},
                {"role": "assistant", "content": "ok"},
            ]
        }
        batch = default_collate_fn([example], processor, base_dir=str(tmp_path))
        assert batch["image_grid_thw"].shape == (1, 3)
