"""Idefics3 / SmolVLM's tiled fast path against the processor call it replaces, and the
Lanczos-3 filter it needs (their default resample): torchvision >= 0.27 resizes uint8
with torch's own ``lanczos`` mode on CPU, the same int16-weight separable arithmetic as
bicubic with the Lanczos-3 weights, which the shared kernel reproduces bit for bit."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torchvision.transforms.v2 import functional as F

from vlm_collate import engine

LANCZOS_SIZES = [
    ((50, 70), (120, 160)),  # upscaled
    ((300, 200), (97, 61)),  # downscaled
    ((1, 1), (6, 6)),
    ((13, 400), (8, 1456)),  # extreme aspect, one side up, the other down
    ((728, 1092), (364, 364)),
    ((448, 448), (1456, 1456)),
    ((3000, 20), (1456, 10)),
    ((364, 364), (364, 364)),  # the same size: the identity
]


@pytest.mark.parametrize("source, target", LANCZOS_SIZES)
def test_lanczos_resize_equals_torchvision(source, target):
    rng = np.random.default_rng(sum(source) + sum(target))
    image = rng.integers(0, 256, (*source, 3), dtype=np.uint8)
    table = torch.arange(256, dtype=torch.float32).repeat(3).contiguous()
    h, w = target
    out = torch.full((1, 3, h, w), float("nan"))
    engine.write_tiles(
        [image],
        np.array([[0, -1, h, w]], dtype=np.int64),
        np.array([[0, 0, 0, 0, 0]], dtype=np.int64),
        out.numpy(),
        table.numpy(),
        np.zeros(3, dtype=np.float32),
        "lanczos",
        2,
    )
    chw = torch.from_numpy(image).permute(2, 0, 1)
    want = F.resize(chw, [h, w], interpolation=F.InterpolationMode.LANCZOS, antialias=True)
    assert torch.equal(out[0], want.float())
