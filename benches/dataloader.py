"""Throughput through a real ``torch.utils.data.DataLoader``: samples per second.

The dataset keeps the conversations' text and makes each sample's image in
``__getitem__`` (a random 448x448 picture from the index, like decoding a file);
the collator is ``VLMCollator`` (vlm_collate) or the seed-style collate.
Workers are forked (Linux default) and persistent; the rate is that of the
second epoch, so it excludes starting them.
"""

from __future__ import annotations

import time
from typing import Any

from torch.utils.data import DataLoader, Dataset

from vlm_collate import VLMCollator

from . import baselines, data
from .common import Context, Table

WORKERS = (0, 2)


class Conversations(Dataset):
    """Examples of one generated image and two turns of generated text."""

    def __init__(self, tokenizer: Any, size: int, image: int, text_tokens: int, turns: int = 2):
        maker = data.TextMaker(tokenizer, seed=7)
        self.conversations = [maker.conversation(text_tokens, turns) for _ in range(size)]
        self.image = image

    def __len__(self) -> int:
        return len(self.conversations)

    def __getitem__(self, index: int) -> dict[str, Any]:
        conversation = [dict(m) for m in self.conversations[index]]
        picture = data.image(self.image, index)
        conversation[0] = {
            "role": "user",
            "content": [
                {"type": "image", "image": picture},
                {"type": "text", "text": conversation[0]["content"]},
            ],
        }
        return {"conversation": conversation}


def config(settings) -> dict[str, int]:
    if settings.quick:
        return {"size": 8, "batch": 4, "image": 112, "text_tokens": 128}
    return {"size": 192, "batch": 8, "image": 448, "text_tokens": 512}


def steps(settings) -> int:
    return 2 * len(WORKERS)


def throughput(dataset: Dataset, collate: Any, batch: int, workers: int) -> dict[str, float]:
    """Samples per second over a second epoch (the first starts the persistent workers)."""
    loader = DataLoader(
        dataset,
        batch_size=batch,
        num_workers=workers,
        collate_fn=collate,
        persistent_workers=workers > 0,
        multiprocessing_context="fork" if workers else None,
    )
    result = {}
    for epoch in ("first", "steady"):
        samples = 0
        t0 = time.perf_counter()
        for out in loader:
            samples += int(out["input_ids"].shape[0])
        result[f"{epoch}_s"] = time.perf_counter() - t0
        result["samples"] = samples
    del loader
    return result


def run(ctx: Context) -> list[Table]:
    cfg = config(ctx.settings)
    dataset = Conversations(ctx.tokenizer, cfg["size"], cfg["image"], cfg["text_tokens"])
    collators = {
        "vlm_collate (fast path)": VLMCollator(ctx.processor),
        "seed-style": baselines.SeedStyleCollator(ctx.processor),
    }
    table = Table(
        "dataloader",
        f"DataLoader throughput: {cfg['size']} samples, batch {cfg['batch']}, one "
        f"{cfg['image']}² image and 2 turns (~{cfg['text_tokens']} text tokens) per sample",
        ["collate_fn", *[f"num_workers={w}" for w in WORKERS], "speedup with 2 workers"],
    )
    for name, collate in collators.items():
        rates = {}
        for workers in WORKERS:
            ctx.advance(f"dataloader {name} workers={workers}")
            result = throughput(dataset, collate, cfg["batch"], workers)
            rates[workers] = result["samples"] / result["steady_s"]
            table.raw.append({"collate_fn": name, "workers": workers, **result})
        table.rows.append(
            [name]
            + [f"{rates[w]:.1f} samples/s" for w in WORKERS]
            + [f"{rates[WORKERS[-1]] / rates[0]:.2f}×"]
        )
    table.notes.append(
        "Steady state: the second of two epochs through one DataLoader with persistent "
        "workers (forked), so worker start-up is not counted. Workers run with 1 torch "
        "thread each."
    )
    return [table]


if __name__ == "__main__":
    import sys

    from .run_all import main

    sys.exit(main(["--only", "dataloader", *sys.argv[1:]]))
