"""The shared resize kernels (``rust/resize.rs``) against torch's antialiased uint8
``interpolate`` on one thread, per size and filter.

Both sides resize the same 448² RGB image (``uint8``), both on one thread
(``torch.set_num_threads(1)``, the engine's ``threads=1``). torch gets the image as
processors hand it over: ``torch.from_numpy(hwc).permute(2, 0, 1)[None]`` (channels-last
strides, its AVX path for uint8). Ours is ``engine.write_tiles`` with one tile covering
the whole resized image, so it also writes the float32 ``(1, 3, H, W)`` output through the
normalisation table (torch's column is the resize alone: ours is an upper bound of the
kernel). Every row first checks that the two give the same bytes (the table is the
identity, so the float32 values are the bytes).

    python -m benches.resize [--quick]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from vlm_collate import engine

from .common import Settings, Table, fmt_ratio, fmt_time, measure_all

# (label, source (height, width), target (height, width), filter)
CASES: list[tuple[tuple[int, int], tuple[int, int], str]] = [
    ((448, 448), (768, 768), "bicubic"),
    ((448, 448), (384, 384), "bicubic"),
    ((448, 448), (560, 560), "bilinear"),
    ((448, 448), (336, 336), "bilinear"),
    ((448, 448), (896, 896), "bicubic"),
    ((448, 448), (512, 512), "lanczos"),
    ((448, 448), (364, 364), "lanczos"),
    ((448, 336), (672, 504), "bicubic"),
]


def _image(size: tuple[int, int]) -> np.ndarray:
    """A smooth picture with noise (both ends of the byte range, like a photo's edges)."""
    h, w = size
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), (x + y) % 256], -1)
    noise = rng.integers(-40, 41, (h, w, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _ours(hwc: np.ndarray, target: tuple[int, int], mode: str):
    th, tw = target
    resizes = np.array([[0, -1, th, tw]], dtype=np.int64)
    tiles = np.array([[0, 0, 0, 0, 0]], dtype=np.int64)
    out = np.empty((1, 3, th, tw), dtype=np.float32)
    table = np.tile(np.arange(256, dtype=np.float32), 3)
    fills = np.zeros(3, dtype=np.float32)

    def run() -> np.ndarray:
        engine.write_tiles([hwc], resizes, tiles, out, table, fills, mode, threads=1)
        return out

    return run


def _torch(hwc: np.ndarray, target: tuple[int, int], mode: str):
    x = torch.from_numpy(hwc).permute(2, 0, 1)[None]

    def run() -> torch.Tensor:
        return F.interpolate(x, size=target, mode=mode, antialias=True, align_corners=False)

    return run


def run(settings: Settings) -> Table:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    table = Table(
        name="resize",
        title="Antialiased uint8 resize on one thread: rust/resize.rs vs torch",
        columns=["resize", "filter", "ours", "torch", "ours / torch"],
    )
    try:
        for source, target, mode in CASES:
            hwc = _image(source)
            ours, theirs = _ours(hwc, target, mode), _torch(hwc, target, mode)
            got = ours()[0].astype(np.uint8)
            want = theirs()[0].numpy()
            if not np.array_equal(got, want):
                raise AssertionError(f"{source}->{target} {mode}: ours differs from torch")
            t = measure_all({"ours": ours, "torch": theirs}, settings)
            a, b = t["ours"].median_s, t["torch"].median_s
            label = f"{source[0]}×{source[1]} → {target[0]}×{target[1]}"
            table.rows.append([label, mode, fmt_time(a), fmt_time(b), fmt_ratio(a / b)])
            table.raw.append(
                {"source": source, "target": target, "filter": mode, "ours_s": a, "torch_s": b}
            )
    finally:
        torch.set_num_threads(threads)
    table.notes.append(
        "ours: engine.write_tiles (resize + float32 output through the table); "
        "torch: F.interpolate(antialias=True) on uint8 alone; one thread each; "
        "outputs checked equal byte for byte first."
    )
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(run(Settings(quick=args.quick)).markdown())


if __name__ == "__main__":
    main()
