"""Placeholder expansion and padding, Kimi K2.5 style: many images per sample.

Each sample holds text and ``images`` one-token placeholders; every placeholder
becomes ``t * (h / 2) * (w / 2)`` tokens from its grid row, then the batch is
right-padded again. Methods (same output, checked every cell):
* engine: ``vlm_collate.expand_image_tokens`` on the padded batch (one call);
* reference: ``reference.tokens_per_grid`` and ``reference.expand_placeholders``;
* torch: whole-batch ``repeat_interleave`` and one scatter into the padded batch;
* seed-style: per sample and per placeholder ``torch.cat``, then pad and stack.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from vlm_collate import expand_image_tokens, reference

from . import baselines, data
from .common import Context, Table, fmt_ratio, fmt_time, measure_all

METHODS = ("engine", "reference", "torch", "seed-style")


def images_per_sample(settings) -> tuple[int, ...]:
    return (4, 16) if settings.quick else (4, 16, 64)


def steps(settings) -> int:
    return len(images_per_sample(settings))


def expand_batch(tokenizer: Any, batch: int, images: int, text_tokens: int, seed: int):
    """``(input_ids, attention_mask, grids)`` with ``images`` placeholders per row."""
    rng = random.Random(seed)
    maker = data.TextMaker(tokenizer, seed=seed)
    placeholder = tokenizer.convert_tokens_to_ids("<|image_pad|>")
    start = tokenizer.convert_tokens_to_ids("<|vision_start|>")
    end = tokenizer.convert_tokens_to_ids("<|vision_end|>")
    rows, grids = [], []
    for _ in range(batch):
        row: list[int] = []
        for _ in range(images):
            chunk = max(1, text_tokens // images - rng.randint(0, 4))
            row += tokenizer.encode(maker.text(chunk), add_special_tokens=False)
            row += [start, placeholder, end]
            grids.append([1, 2 * rng.randint(4, 20), 2 * rng.randint(4, 20)])
        rows.append(row)
    ids, mask = reference.pad_rows(rows, tokenizer.pad_token_id)
    return (
        np.asarray(ids, dtype=np.int64),
        np.asarray(mask, dtype=np.int64),
        np.asarray(grids, dtype=np.int64),
        placeholder,
    )


def _methods(ids: np.ndarray, mask: np.ndarray, grids: np.ndarray, placeholder: int, pad: int):
    ids_t, mask_t, grids_t = map(torch.from_numpy, (ids, mask, grids))

    def engine():
        return expand_image_tokens(ids_t, mask_t, grids_t, placeholder, pad_id=pad)

    def ref():
        counts = reference.tokens_per_grid(grids)
        per_row = (ids == placeholder).sum(axis=1)
        out = reference.expand_placeholders(ids, mask, placeholder, counts, per_row, pad)
        return torch.tensor(out[0]), torch.tensor(out[1])

    def vectorised():
        return baselines.torch_expand(ids_t, mask_t, grids_t, placeholder, pad)

    def seed():
        return baselines.seed_style_expand(ids_t, mask_t, grids_t, placeholder, pad)

    return {"engine": engine, "reference": ref, "torch": vectorised, "seed-style": seed}


def run(ctx: Context) -> list[Table]:
    s = ctx.settings
    tokenizer = ctx.tokenizer
    pad = tokenizer.pad_token_id
    text_tokens = 256 if s.quick else 1024
    table = Table(
        "expand",
        f"Placeholder expansion + padding, batch of {s.batch}, {text_tokens} text tokens "
        "per sample, median time per batch",
        [
            "images/sample",
            "tokens in → out",
            *METHODS,
            "vs reference",
            "vs torch",
            "vs seed-style",
        ],
    )
    for images in images_per_sample(s):
        ctx.advance(f"expand {images} images/sample")
        ids, mask, grids, placeholder = expand_batch(
            tokenizer, s.batch, images, text_tokens, seed=images
        )
        methods = _methods(ids, mask, grids, placeholder, pad)
        expected = methods["engine"]()
        agree = {
            name: all(torch.equal(a, b) for a, b in zip(fn(), expected))
            for name, fn in methods.items()
        }
        times = {name: t.median_s for name, t in measure_all(methods, s).items()}
        shape_in, shape_out = tuple(ids.shape), tuple(expected[0].shape)
        table.rows.append(
            [str(images), f"{shape_in[1]:,} → {shape_out[1]:,}"]
            + [fmt_time(times[n]) + ("" if agree[n] else " ≠") for n in METHODS]
            + [fmt_ratio(times[n] / times["engine"]) for n in ("reference", "torch", "seed-style")]
        )
        table.raw.append(
            {
                "images_per_sample": images,
                "shape_in": shape_in,
                "shape_out": shape_out,
                "tokens_out": int(expected[1].sum()),
                "times": times,
                "agree": agree,
            }
        )
    table.notes.append(
        "Grids (1, h, w) with h, w even in 8..40, so 16..400 tokens per image; "
        "'vs X' = X's time / engine's time. Outputs of all methods compared with the engine's."
    )
    return [table]


if __name__ == "__main__":
    import sys

    from .run_all import main

    sys.exit(main(["--only", "expand", *sys.argv[1:]]))
