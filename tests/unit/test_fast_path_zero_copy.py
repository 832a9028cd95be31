"""The engine reads a PIL image's own buffer (Pillow's RGBX storage, exported through
the Arrow C interface) instead of a copied ``(H, W, 3)`` array, and images kept at their
size are cut into patches straight from it: the pixels equal the processor's bit for bit
either way, the view is the image's memory (no copy) and outlives the image, and what
cannot be exported (other modes, images too large for one block) is copied as before."""

from __future__ import annotations

import gc
import io

import numpy as np
import pytest
import torch
from PIL import Image

from vlm_collate import engine
from vlm_collate.pipeline.fast_path import engine_pixels, fast_plan, pixel_values
from vlm_collate.pipeline.media import load_image
from vlm_collate.pipeline.pil_buffer import rgbx_view
from vlm_collate.testing.builders import qwen2_5_vl_processor
from vlm_collate.testing.families import gemma3_processor


def _random_image(seed: int, height: int, width: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_the_view_is_the_images_own_memory_and_outlives_it():
    image = _random_image(0, 37, 53)
    expected = np.asarray(image).copy()
    view = rgbx_view(image)
    assert view is not None and view.shape == (37, 53, 4) and view.dtype == np.uint8
    assert not view.flags.writeable
    assert np.array_equal(view[..., :3], expected)
    # The same memory each time (no copy): two views of one image share their buffer.
    assert rgbx_view(image).__array_interface__["data"][0] == view.__array_interface__["data"][0]
    del image
    gc.collect()
    others = [_random_image(k, 37, 53) for k in range(1, 20)]  # reuse freed memory if any
    assert np.array_equal(view[..., :3], expected)
    del others


def test_what_cannot_be_exported_is_copied_as_before():
    assert rgbx_view(Image.new("L", (4, 4))) is None
    assert rgbx_view(Image.new("RGBA", (4, 4))) is None
    assert rgbx_view(np.zeros((4, 4, 3), np.uint8)) is None
    # Rows in several blocks (larger than Pillow's 16 MiB block): no single buffer.
    large = Image.new("RGB", (2100, 2100), (1, 2, 3))
    assert rgbx_view(large) is None
    array = engine_pixels(large)
    assert array.shape == (2100, 2100, 3) and array.flags.c_contiguous
    assert engine_pixels(np.zeros((4, 5, 3), np.uint8)).shape == (4, 5, 3)


def test_engine_reads_rgbx_as_its_rgb_pixels():
    rgb = np.asarray(_random_image(3, 56, 84))
    junk = np.random.default_rng(4).integers(0, 256, (56, 84, 1), dtype=np.uint8)
    rgbx = np.ascontiguousarray(np.concatenate([rgb, junk], axis=2))
    table = np.arange(768, dtype=np.float32)
    for target in ((56, 84), (28, 56), (84, 112)):  # kept, down, up
        targets = np.array([target], dtype=np.int64)
        rows = int(engine.pixel_rows(targets, 14, 2, 2).sum())
        a, b = (np.empty((rows, 1176), np.float32) for _ in range(2))
        engine.write_pixel_values([rgb], targets, a, table, 14, 2, 2)
        engine.write_pixel_values([rgbx], targets, b, table, 14, 2, 2)
        assert np.array_equal(a, b), target
    with pytest.raises(ValueError, match=r"images\[0\] has shape"):
        engine.write_pixel_values([rgbx[..., :2].copy()], targets, a, table, 14, 2, 2)


@pytest.mark.parametrize("size", [(448, 448), (56, 84), (28, 28), (300, 451), (1, 1)])
def test_pixels_from_pil_images_equal_the_processors(size):
    """Kept sizes (multiples of 28: read in place) and resized ones, from the image's
    own buffer, against the image processor; and against the same images as arrays."""
    processor = qwen2_5_vl_processor()
    plan = fast_plan(processor)
    images = [_random_image(k, *size) for k in range(3)]
    assert all(rgbx_view(im) is not None for im in images)
    expected = processor.image_processor(images=images, return_tensors="pt")
    got, grids = pixel_values(images, plan)
    assert torch.equal(grids, expected["image_grid_thw"])
    assert torch.equal(got, expected["pixel_values"])
    from_arrays, _ = pixel_values([np.asarray(im) for im in images], plan)
    assert torch.equal(from_arrays, got)


def test_channels_first_images_from_pil_buffers_equal_the_processors():
    processor = gemma3_processor()
    plan = fast_plan(processor)
    images = [_random_image(k, 100 + 7 * k, 90) for k in range(2)]
    expected = processor.image_processor(images=images, return_tensors="pt")["pixel_values"]
    got, _ = pixel_values(images, plan)
    assert torch.equal(got, expected)


def test_a_decoded_jpeg_is_read_in_place(tmp_path):
    """A file decoded by load_image is neither copied for EXIF (upright) nor for the
    engine: the engine reads the decoder's buffer, and the pixels equal the processor's
    on the same decoded image."""
    path = tmp_path / "a.jpg"
    _random_image(5, 448, 448).save(path, quality=90)
    image = load_image(str(path))
    assert image.mode == "RGB" and rgbx_view(image) is not None
    processor = qwen2_5_vl_processor()
    got, _ = pixel_values([image], fast_plan(processor))
    expected = processor.image_processor(images=[image], return_tensors="pt")["pixel_values"]
    assert torch.equal(got, expected)


def test_an_upright_image_is_not_copied_and_a_rotated_one_is_turned():
    image = _random_image(6, 20, 30)
    assert load_image(image) is image  # RGB, no EXIF orientation: the image itself
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated: turned upright by 270 degrees
    data = io.BytesIO()
    image.save(data, format="PNG", exif=exif)
    turned = load_image(data.getvalue())
    assert turned.size == (20, 30)
    assert np.array_equal(np.asarray(turned), np.asarray(image.transpose(Image.ROTATE_270)))
