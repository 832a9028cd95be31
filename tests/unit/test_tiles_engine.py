"""``engine.write_tiles``, the pixel step the tiled families share: windows of resized
images equal torchvision's antialiased resize of the same uint8 image, cut at the same
place; padding takes the fill; chained resizes equal resizing the resize; bad rows are
errors naming the argument."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as F

from vlm_collate import engine
from vlm_collate.errors import EngineError

MODES = {"bicubic": F.InterpolationMode.BICUBIC, "bilinear": F.InterpolationMode.BILINEAR}


def _resize(image: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    return F.resize(image, list(size), interpolation=MODES[mode], antialias=True)


def _table() -> torch.Tensor:
    mean, std = torch.tensor([0.48, 0.45, 0.40]), torch.tensor([0.26, 0.26, 0.27])
    values = torch.arange(256, dtype=torch.float32) / 255.0
    return ((values[None, :] - mean[:, None]) / std[:, None]).reshape(-1).contiguous()


@pytest.mark.parametrize("mode", ["bicubic", "bilinear"])
@pytest.mark.parametrize("size", [(300, 500), (37, 1000), (1, 1), (448, 448)])
def test_windows_equal_torchvision_resize_then_crop(mode, size):
    rng = np.random.default_rng(sum(size))
    image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    table = _table()
    grid = (2, 3)
    tile = 64
    resizes = np.array(
        [[0, -1, grid[0] * tile, grid[1] * tile], [0, 0, tile, tile]], dtype=np.int64
    )
    tiles = [[0, r * tile, c * tile, r * grid[1] + c, 0] for r in range(2) for c in range(3)]
    tiles.append([1, 0, 0, 6, 0])
    out = torch.full((7, 3, tile, tile), float("nan"))
    fills = np.zeros(3, dtype=np.float32)
    engine.write_tiles(
        [image], resizes, np.asarray(tiles), out.numpy(), table.numpy(), fills, mode, 2
    )
    chw = torch.from_numpy(image).permute(2, 0, 1)
    big = _resize(chw, (grid[0] * tile, grid[1] * tile), mode)
    small = _resize(big, (tile, tile), mode)

    def normalised(t: torch.Tensor) -> torch.Tensor:
        return table.view(3, 256).gather(1, t.reshape(3, -1).long()).view(t.shape)

    for r in range(2):
        for c in range(3):
            want = normalised(big[:, r * tile : (r + 1) * tile, c * tile : (c + 1) * tile])
            assert torch.equal(out[r * 3 + c], want)
    assert torch.equal(out[6], normalised(small))


def test_padding_takes_the_fill_and_untouched_slots_keep_their_values():
    image = np.full((10, 20, 3), 200, dtype=np.uint8)
    table = torch.arange(256, dtype=torch.float32).repeat(3)
    out = torch.full((3, 3, 16, 16), -7.0)
    resizes = np.array([[0, -1, 10, 20]], dtype=np.int64)
    # Slot 0: the image at the top-left, padded below (fill 0: byte 0 -> 0.0); slot 2:
    # centred vertically with fill 1 (three given values).
    tiles = np.array([[0, 0, 2, 0, 0], [0, -3, 4, 2, 1]], dtype=np.int64)
    fills = np.array([0.0, 0.0, 0.0, 1.5, 2.5, 3.5], dtype=np.float32)
    engine.write_tiles([image], resizes, tiles, out.numpy(), table.numpy(), fills, "bilinear")
    assert torch.all(out[0, :, :10, :] == 200) and torch.all(out[0, :, 10:, :] == 0)
    assert torch.all(out[1] == -7.0)
    assert torch.all(out[2, :, 3:13, :] == 200)
    for c, v in enumerate((1.5, 2.5, 3.5)):
        assert torch.all(out[2, c, :3] == v) and torch.all(out[2, c, 13:] == v)


def test_bfloat16_output_equals_float32_rounded():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (50, 70, 3), dtype=np.uint8)
    table = _table()
    resizes = np.array([[0, -1, 32, 32]], dtype=np.int64)
    tiles = np.array([[0, 0, 0, 0, 0]], dtype=np.int64)
    f32 = torch.empty((1, 3, 32, 32))
    engine.write_tiles(
        [image], resizes, tiles, f32.numpy(), table.numpy(), np.zeros(3, np.float32), "bicubic"
    )
    b16 = torch.empty((1, 3, 32, 32), dtype=torch.bfloat16)
    as_u16 = b16.view(torch.int16).numpy().view(np.uint16)
    table16 = table.to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    fills16 = torch.zeros(3, dtype=torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    engine.write_tiles([image], resizes, tiles, as_u16, table16, fills16, "bicubic")
    assert torch.equal(b16, f32.to(torch.bfloat16))


@pytest.mark.parametrize(
    ("resizes", "tiles", "message"),
    [
        ([[1, -1, 4, 4]], [[0, 0, 0, 0, 0]], "resizes\\[0\\] names image 1"),
        ([[0, 0, 4, 4]], [[0, 0, 0, 0, 0]], "earlier resize of the same image"),
        ([[0, -1, 4, 4]], [[0, 0, 0, 5, 0]], "slot 5"),
        ([[0, -1, 4, 4]], [[0, 0, 0, 0, 0], [0, 0, 0, 0, 0]], "another tile writes"),
        ([[0, -1, 4, 4]], [[0, 0, 0, 0, 2]], "fill 2"),
        ([[0, -1, -4, 4]], [[0, 0, 0, 0, 0]], "resizes\\[0\\]\\[2\\]"),
    ],
)
def test_bad_rows_are_engine_errors(resizes, tiles, message):
    image = np.zeros((4, 4, 3), dtype=np.uint8)
    out = np.zeros((2, 3, 4, 4), dtype=np.float32)
    table = np.zeros(768, dtype=np.float32)
    with pytest.raises(EngineError, match=message):
        engine.write_tiles(
            [image],
            np.asarray(resizes, dtype=np.int64),
            np.asarray(tiles, dtype=np.int64),
            out,
            table,
            np.zeros(3, np.float32),
            "bicubic",
        )
