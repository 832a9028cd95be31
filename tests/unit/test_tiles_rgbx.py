"""``engine.write_tiles`` reads PIL images in place: an ``(H, W, 4)`` RGBX view of the
image's own buffer gives the same tiles as its ``(H, W, 3)`` copy, for every filter,
resized (both axes, one axis) or kept at its size; the tiled fast path hands it that view."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vlm_collate import engine
from vlm_collate.pipeline import fast_tiles
from vlm_collate.pipeline.pil_buffer import rgbx_view


def _image(h: int, w: int) -> Image.Image:
    rng = np.random.default_rng(h * 1000 + w)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), "RGB")


def _tiles(pixels: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    th, tw = size
    out = np.full((2, 3, 20, 24), -1.0, dtype=np.float32)
    table = np.tile(np.arange(256, dtype=np.float32), 3) / 255.0
    resizes = np.array([[0, -1, th, tw]], dtype=np.int64)
    tiles = np.array([[0, 0, 0, 0, 0], [0, th - 10, tw - 12, 1, 0]], dtype=np.int64)
    fills = np.array([0.5, 0.25, 0.125], dtype=np.float32)
    engine.write_tiles([pixels], resizes, tiles, out, table, fills, mode, threads=1)
    return out


@pytest.mark.parametrize("mode", ["bilinear", "bicubic", "lanczos"])
@pytest.mark.parametrize("size", [(31, 45), (17, 29), (23, 45), (31, 60)])
def test_an_rgbx_view_gives_the_tiles_of_its_rgb_copy(mode, size):
    image = _image(23, 45)
    view = rgbx_view(image)
    if view is None:
        pytest.skip("this Pillow does not export its buffer (the copy path is the only one)")
    assert view.shape == (23, 45, 4)
    rgb = np.asarray(image)
    got = _tiles(view, size, mode)
    want = _tiles(np.ascontiguousarray(rgb), size, mode)
    np.testing.assert_array_equal(got, want)
    assert (got >= 0).all()  # every slot written


def test_the_tiled_fast_path_passes_the_view_unless_it_pads_first():
    image = _image(12, 9)

    class NoPad:
        source_pad = None

    class Pad:
        source_pad = ((1, 2, 3, 4), (10, 20, 30))

    source = fast_tiles._source(image, NoPad())
    view = rgbx_view(image)
    if view is not None:
        assert source.shape == (12, 9, 4)
        assert source.__array_interface__["data"][0] == view.__array_interface__["data"][0]
    np.testing.assert_array_equal(source[..., :3], np.asarray(image))
    padded = fast_tiles._source(image, Pad())
    assert padded.shape == (15, 16, 3)
    np.testing.assert_array_equal(padded[1:13, 3:12], np.asarray(image))
    assert (padded[0, 0] == [10, 20, 30]).all()


def test_a_four_channel_array_of_the_wrong_width_is_a_clear_error():
    bad = np.zeros((4, 5, 2), dtype=np.uint8)
    with pytest.raises(engine.EngineError, match=r"images\[0\].*\(height, width, 3\) RGB"):
        _tiles(bad, (8, 8), "bicubic")
