"""Packing at scale, by simulation (issue 21 item 7, issue 22 item 5), and streaming's
costs.

The sampler and the online packer are pure numbers, so ``PackedBatchSampler`` plans an
epoch of 10 million synthetic lengths (a realistic mix: 30% text-only rows, 70% rows
with one image of 8-64 x 8-64 merged patches of 28 px) for 8 and 64 ranks. Each rank
builds only its own share (its plan: construction time, the peak of the memory traced
by ``tracemalloc`` while building it, the lengths column itself not counted); the
sampler runs in each rank's main process and its DataLoader workers (8 per rank here)
collate what it hands out, so the plan does not depend on the workers. Per-step
imbalance: each step's max/mean over ranks of the text tokens (``balance="tokens"``) or
the vision patches (``balance="vision"``), from the epoch's plan
(``PackedBatchSampler.epoch_rounds``). Resume: ``state_dict`` on a sampler that has
yielded 1,000 batches (half the epoch when shorter), ``load_state_dict`` on a fresh one
and the time to its first batch (which builds the plan).

Streaming: online packing (``OnlinePacker``, ``buffer_size=1000``) against the offline
sampler on the same lengths (padding share), the packer's and the length estimate's
cost per row against the collate time per row, and ``add_lengths`` (``num_proc=2``)
against a ``LengthEstimator`` loop and a loop that decodes each row's images, on rows
whose images are JPEG files on disk.
"""

from __future__ import annotations

import os
import random
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import numpy as np

from vlm_collate import LengthEstimator, PackedBatchSampler, PackedCollator
from vlm_collate.packing.lengths import add_lengths
from vlm_collate.packing.stream import OnlinePacker, online_batches

from . import data
from .common import Context, Table, Target, fmt_time

MAX_LENGTH = 8192
WORKERS = 8
ROWS = 20_000
"""Rows of the add_lengths comparison (a full run)."""
ROUNDS = 2
"""Interleaved rounds of the add_lengths comparison; each method's best is reported."""


def steps(settings) -> int:
    return 4


def synthetic(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(lengths, patches)`` of ``n`` rows: text tokens log-normal (median ~265), 70% of
    rows with one image of 8-64 x 8-64 merged 28 px patches (4 vision patches each)."""
    rng = np.random.default_rng(seed)
    text = rng.lognormal(5.5, 0.8, n).astype(np.int64) + 20
    sides = rng.integers(8, 65, (n, 2))
    patches = np.where(rng.random(n) < 0.7, sides[:, 0] * sides[:, 1] * 4, 0)
    return text + patches // 4, patches


def _plan(lengths, patches, ranks: int, balance: str) -> dict[str, Any]:
    sampler = PackedBatchSampler(
        lengths, MAX_LENGTH, num_replicas=ranks, rank=0, balance=balance, vision=patches
    )
    tracemalloc.start()
    t0 = time.perf_counter()
    steps_ = len(sampler)  # builds rank 0's share of the epoch
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    packed, bounds, rounds = sampler.epoch_rounds()
    starts = bounds[:-1]
    tokens = np.add.reduceat(np.minimum(lengths, MAX_LENGTH)[packed], starts)
    vision = np.add.reduceat(patches[packed], starts)
    share = 1 - tokens.sum() / (MAX_LENGTH * (len(bounds) - 1))

    def imbalance(cost: np.ndarray) -> tuple[float, float]:
        per_step = cost[rounds].astype(np.float64)  # (steps, ranks)
        ratio = per_step.max(1) / np.maximum(per_step.mean(1), 1e-9)
        return float(ratio.mean()), float(ratio.max())

    # Resume: the state after 1,000 batches, loaded into a fresh sampler (same plan).
    it = iter(sampler)
    for _ in range(min(1000, steps_ // 2)):
        next(it)
    t0 = time.perf_counter()
    state = sampler.state_dict()
    fresh = PackedBatchSampler(
        lengths, MAX_LENGTH, num_replicas=ranks, rank=0, balance=balance, vision=patches
    )
    fresh.load_state_dict(state)
    first = next(iter(fresh))
    resume = time.perf_counter() - t0
    assert first == next(it), "the resumed sampler's first batch is not the next one"
    return {
        "ranks": ranks,
        "balance": balance,
        "steps": steps_,
        "seconds": seconds,
        "peak_bytes": peak,
        "padding_share": float(share),
        "tokens_imbalance": imbalance(tokens),
        "vision_imbalance": imbalance(vision),
        "resume_s": resume,
    }


def _sampler_table(ctx: Context) -> tuple[Table, list[dict]]:
    n = 200_000 if ctx.settings.quick else 10_000_000
    lengths, patches = synthetic(n)
    raws = []
    for ranks, balance in ((8, "tokens"), (64, "tokens"), (64, "vision")):
        ctx.advance(f"scale: sampler, {n:,} lengths, {ranks} ranks, {balance}")
        raws.append(_plan(lengths, patches, ranks, balance))
    table = Table(
        "scale_sampler",
        f"PackedBatchSampler on {n:,} synthetic lengths (mean {lengths.mean():.0f} tokens, "
        f"70% with an image), rows of {MAX_LENGTH:,} tokens, one rank's plan "
        f"({WORKERS} workers per rank)",
        [
            "ranks",
            "balance",
            "steps per rank",
            "plan time",
            "peak memory per rank",
            "padding share",
            "tokens max/mean (mean, worst step)",
            "vision max/mean (mean, worst step)",
            "resume (state + load + first batch)",
        ],
    )
    for r in raws:
        table.rows.append(
            [
                str(r["ranks"]),
                r["balance"],
                f"{r['steps']:,}",
                fmt_time(r["seconds"]),
                f"{r['peak_bytes'] / 2**20:.0f} MiB",
                f"{r['padding_share']:.2%}",
                "{:.3f}, {:.3f}".format(*r["tokens_imbalance"]),
                "{:.3f}, {:.3f}".format(*r["vision_imbalance"]),
                fmt_time(r["resume_s"]),
            ]
        )
    table.raw = raws
    table.notes = [
        "every rank packs the whole epoch (the same plan everywhere, no communication) and "
        "keeps only its share: its time and memory do not grow with the ranks",
        "peak memory: traced by tracemalloc while one rank builds its plan (numpy arrays), "
        f"the lengths column ({lengths.nbytes / 2**20:.0f} MiB of int64) not counted",
        "imbalance: per step, the largest rank's cost over the mean rank's; 1.000 is even",
    ]
    return table, raws


JPEG_SIDES = (320, 1024)
"""Sides of the benchmark's JPEG images, in pixels (each side drawn independently)."""
JPEG_POOL = 64


def _jpeg_pool(folder: Path, seed: int) -> list[Path]:
    """``JPEG_POOL`` distinct photo-like JPEG files (smooth colour fields with grain, sides
    in ``JPEG_SIDES``, quality 90: tens to a few hundred KB, like published datasets'
    images; random noise would make files several times larger and slower to decode)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    pool = []
    for k in range(JPEG_POOL):
        width, height = (int(v) for v in rng.integers(*JPEG_SIDES, 2, endpoint=True))
        coarse = rng.integers(0, 256, (max(height // 24, 2), max(width // 24, 2), 3))
        smooth = Image.fromarray(coarse.astype(np.uint8)).resize((width, height), Image.BICUBIC)
        grain = rng.normal(0, 6, (height, width, 3))
        pixels = np.clip(np.asarray(smooth, dtype=np.float64) + grain, 0, 255).astype(np.uint8)
        path = folder / f"pool-{k}.jpg"
        Image.fromarray(pixels).save(path, quality=90)
        pool.append(path)
    return pool


def _jpeg_rows(folder: Path, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` rows of one user and one assistant message, two in three with an image: a
    JPEG file of its own (a hard link to one of the pool's files, so every row opens its
    own path)."""
    rng = random.Random(seed)
    maker = data.TextMaker(_jpeg_rows.tokenizer, seed=seed)
    pool = _jpeg_pool(folder, seed)
    rows = []
    for i in range(n):
        images = []
        if i % 3 != 2:
            path = folder / f"{i}.jpg"
            try:
                os.link(pool[rng.randrange(len(pool))], path)
            except OSError:  # a file system without hard links
                path.write_bytes(pool[rng.randrange(len(pool))].read_bytes())
            images.append(str(path))
        content = [{"type": "image"} for _ in images]
        content.append({"type": "text", "text": maker.text(rng.randint(10, 60))})
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": content},
                    {
                        "role": "assistant",
                        "content": [{"type": "text", "text": maker.text(rng.randint(20, 120))}],
                    },
                ],
                "images": images,
            }
        )
    return rows


def _cpu_seconds() -> float:
    """CPU seconds used so far by this process (all its threads) and its waited-for
    children (datasets' workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def _yielded(rows: list[dict[str, Any]]) -> Any:
    yield from rows


def _streaming_table(ctx: Context) -> Table:
    from PIL import Image

    s, processor = ctx.settings, ctx.processor
    table = Table(
        "scale_streaming",
        "Streaming: online packing against the offline sampler, its cost per row, and "
        "lengths on rows whose images are JPEG files",
        ["measure", "value", "compared with", "ratio"],
    )
    raw: dict[str, Any] = {}

    ctx.advance("scale: online vs offline padding")
    n = 20_000 if s.quick else 200_000
    lengths, _ = synthetic(n, seed=1)
    capped = np.minimum(lengths, MAX_LENGTH)
    online = list(online_batches(capped.tolist(), MAX_LENGTH, buffer_size=1000))
    offline = list(PackedBatchSampler(capped, MAX_LENGTH, seed=0))
    share_on = 1 - capped.sum() / (MAX_LENGTH * len(online))
    share_off = 1 - capped.sum() / (MAX_LENGTH * len(offline))
    raw.update(online_share=float(share_on), offline_share=float(share_off))
    table.rows.append(
        [
            f"padding share, online (buffer_size=1000), {n:,} rows",
            f"{share_on:.2%}",
            f"offline PackedBatchSampler {share_off:.2%}",
            f"{(share_on - share_off) * 100:+.2f} points",
        ]
    )

    ctx.advance("scale: per-row cost of streaming")
    with tempfile.TemporaryDirectory() as tmp:
        _jpeg_rows.tokenizer = ctx.tokenizer
        # add_lengths and the loops run on `count` rows (a size where datasets' fixed
        # cost of num_proc is amortised as on a real dataset); the per-row costs of
        # streaming on the first `few`.
        count = 24 if s.quick else ROWS
        few = min(count, 300)
        rows = _jpeg_rows(Path(tmp), count, seed=3)
        estimate = LengthEstimator(processor)
        est = [estimate(r, i) for i, r in enumerate(rows[:few])]
        packer = OnlinePacker(2048, buffer_size=8)
        t0 = time.perf_counter()
        for _ in range(20):
            for key, length in enumerate(est):
                packer.push(length, key)
                while packer.full():
                    packer.pop()
            while len(packer):
                packer.pop()
        pack_row = (time.perf_counter() - t0) / (20 * few)
        t0 = time.perf_counter()
        for i, r in enumerate(rows[:few]):
            estimate(r, i)
        estimate_row = (time.perf_counter() - t0) / few
        collator = PackedCollator(processor, 2048)
        groups = list(online_batches(est, 2048, buffer_size=8))
        t0 = time.perf_counter()
        for g in groups:
            collator([rows[k] for k in g])
        collate_row = (time.perf_counter() - t0) / few
        raw.update(pack_row_s=pack_row, estimate_row_s=estimate_row, collate_row_s=collate_row)
        table.rows.append(
            [
                "online packer per row (push + pop)",
                fmt_time(pack_row),
                f"collate per row {fmt_time(collate_row)}",
                f"{pack_row / collate_row:.2%}",
            ]
        )
        table.rows.append(
            [
                "length estimate per row (render + tokenize + image header)",
                fmt_time(estimate_row),
                f"collate per row {fmt_time(collate_row)}",
                f"{estimate_row / collate_row:.2%}",
            ]
        )

        ctx.advance(f"scale: add_lengths vs loops on {count:,} rows with JPEG files")
        import datasets

        # The dataset as one is used: Arrow files on disk, an Image column holding the
        # files' paths (as datasets stores local image files).
        features = datasets.Features(
            {
                "messages": datasets.Dataset.from_list(rows[:1]).features["messages"],
                "images": datasets.List(datasets.Image()),
            }
        )
        datasets.disable_progress_bars()
        dataset = datasets.Dataset.from_generator(
            _yielded,
            features=features,
            cache_dir=str(Path(tmp) / "cache"),
            gen_kwargs={"rows": rows},
        )
        sizes = [os.path.getsize(p) for r in rows for p in r["images"]]

        def estimator_loop() -> list[int]:
            return [estimate(r, i) for i, r in enumerate(rows)]

        def decoding_loop() -> list[int]:
            # What a user without header reading writes: open and decode each image,
            # then take the length (LengthEstimator on the decoded images: the cheapest
            # such loop; the processor's own call would add the pixel preprocessing).
            lengths = []
            for i, r in enumerate(rows):
                images = []
                for path in r["images"]:
                    with Image.open(path) as image:
                        images.append(image.convert("RGB"))
                lengths.append(estimate({**r, "images": images}, i))
            return lengths

        def mapped(num_proc: int | None) -> Any:
            def run() -> Any:
                # A first run, as a user's: no result of an earlier method on disk (datasets
                # would otherwise reuse its shard count, one worker after num_proc=None).
                dataset.cleanup_cache_files()
                return add_lengths(
                    dataset, processor, num_proc=num_proc, load_from_cache_file=False
                )

            return run

        methods = {
            "loop": estimator_loop,
            "decode": decoding_loop,
            "single": mapped(None),
            "map": mapped(2),
        }
        best: dict[str, float] = {}
        cpu: dict[str, float] = {}  # CPU seconds of every process and thread, at the best
        results: dict[str, Any] = {}
        for _ in range(1 if s.quick else ROUNDS):  # interleaved rounds, best of each
            for name, method in methods.items():
                t0, c0 = time.perf_counter(), _cpu_seconds()
                results[name] = method()
                wall, spent = time.perf_counter() - t0, _cpu_seconds() - c0
                if wall < best.get(name, float("inf")):
                    best[name], cpu[name] = wall, spent
        datasets.enable_progress_bars()
        lengths = [list(results[k]["length"]) for k in ("single", "map")]
        assert lengths[0] == lengths[1] == results["loop"] == results["decode"], (
            "add_lengths disagrees with the loops"
        )
        assert list(results["map"]["vision_length"]) == list(results["single"]["vision_length"])
    loop_s, decode_s, single_s, map_s = (best[k] for k in ("loop", "decode", "single", "map"))
    raw.update(cpu_row_s={k: v / count for k, v in cpu.items()})
    raw.update(
        loop_s=loop_s,
        decode_s=decode_s,
        map_s=map_s,
        single_s=single_s,
        rows=count,
        images=len(sizes),
        jpeg_kib_median=float(np.median(sizes)) / 1024,
    )
    table.rows.append(
        [
            f"LengthEstimator loop, {count:,} rows (JPEG files)",
            f"{fmt_time(loop_s)} ({count / loop_s:,.0f} rows/s)",
            f"loop decoding each image {fmt_time(decode_s)} ({count / decode_s:,.0f} rows/s)",
            f"{decode_s / loop_s:.2f}×",
        ]
    )
    table.rows.append(
        [
            f"add_lengths without workers, {count:,} rows",
            f"{fmt_time(single_s)} ({count / single_s:,.0f} rows/s)",
            f"LengthEstimator loop {fmt_time(loop_s)}",
            f"{loop_s / single_s:.2f}×",
        ]
    )
    table.rows.append(
        [
            f"add_lengths num_proc=2, {count:,} rows",
            f"{fmt_time(map_s)} ({count / map_s / 2:,.0f} rows/s per process)",
            f"LengthEstimator loop {fmt_time(loop_s)}",
            f"{loop_s / map_s:.2f}×",
        ]
    )
    table.rows.append(
        [
            f"add_lengths num_proc=2, {count:,} rows",
            f"{fmt_time(map_s)} ({count / map_s:,.0f} rows/s)",
            f"loop decoding each image {fmt_time(decode_s)}",
            f"{decode_s / map_s:.2f}×",
        ]
    )
    per_row = raw["cpu_row_s"]
    table.rows.append(
        [
            "CPU time per row (every process and thread)",
            f"add_lengths {fmt_time(per_row['single'])} without workers, "
            f"{fmt_time(per_row['map'])} with num_proc=2",
            f"LengthEstimator loop {fmt_time(per_row['loop'])}, decoding loop "
            f"{fmt_time(per_row['decode'])}",
            f"{per_row['loop'] / per_row['map']:.2f}×, {per_row['decode'] / per_row['map']:.2f}×",
        ]
    )
    table.raw = [raw]
    cores, load = os.cpu_count(), os.getloadavg()[0]
    table.notes = [
        f"add_lengths rows: {count:,} rows of one user and one assistant message, two in "
        f"three with one JPEG file ({len(sizes):,} files of {JPEG_SIDES[0]}-{JPEG_SIDES[1]} "
        f"px a side, median {raw['jpeg_kib_median']:.0f} KiB; hard links to {JPEG_POOL} "
        "distinct photo-like images), as a datasets.Dataset written to Arrow files on "
        "disk (Dataset.from_generator) with an Image column holding the paths; the files "
        "are in the page cache for every method; each time is the best of "
        f"{1 if s.quick else ROUNDS} interleaved rounds; every method gives the same "
        "lengths (checked)",
        "the loops run over the rows as Python dicts with image paths (no datasets "
        "overhead); the decoding loop opens and decodes each image with PIL "
        "(Image.open(path).convert('RGB')) and then takes LengthEstimator's length on the "
        "decoded images (the processor's own call would add its pixel preprocessing)",
        "add_lengths' time includes datasets' num_proc costs (forking 2 workers that "
        "inherit the estimator, one Arrow file per worker, the merge, casting the image "
        "column to decode=False and back); the garbage collector is frozen during the map "
        "so a worker's first collection does not copy the parent's heap",
        "add_lengths does batched work: each map batch renders every row, tokenizes all "
        "its texts in one encode_batch_fast call of the Rust tokenizer (in one process it "
        "may use both cores; forked workers encode serially), and reads each image's size "
        "from its JPEG frame header (parsed directly; PIL for other formats), no pixels",
        f"measured on {cores} cores shared with other work (load average {load:.1f} at the "
        "end): num_proc=2 can only beat a one-process loop by the cores it actually gets; "
        "the CPU time per row (os.times: user and system time of the process, its threads "
        "and its waited-for children) does not depend on that share: with 2 cores free, "
        f"num_proc=2 would take about {fmt_time(per_row['map'] / 2)} per row, "
        f"{per_row['loop'] / (per_row['map'] / 2):.1f}× the LengthEstimator loop and "
        f"{per_row['decode'] / (per_row['map'] / 2):.0f}× the decoding loop (an estimate "
        "from the CPU time, not a measurement)",
    ]
    return table


def run(ctx: Context) -> list[Table]:
    sampler, raws = _sampler_table(ctx)
    streaming = _streaming_table(ctx)
    full = not ctx.settings.quick
    for r in raws:
        if r["ranks"] == 64 and r["balance"] == "tokens":
            ctx.targets.append(
                Target(
                    "sampler plan: 10M lengths x 64 ranks, time per rank",
                    "< 5 s",
                    fmt_time(r["seconds"]),
                    (r["seconds"] < 5) if full else None,
                )
            )
            ctx.targets.append(
                Target(
                    "sampler plan: memory per rank per epoch",
                    "< 200 MiB",
                    f"{r['peak_bytes'] / 2**20:.0f} MiB",
                    (r["peak_bytes"] < 200 * 2**20) if full else None,
                )
            )
    by = {(r["ranks"], r["balance"]): r for r in raws}
    growth = by[(64, "tokens")]["peak_bytes"] / by[(8, "tokens")]["peak_bytes"]
    ctx.targets.append(
        Target(
            "sampler memory per rank does not grow with ranks (64 vs 8)",
            "≤ 1.05×",
            f"{growth:.2f}×",
            growth <= 1.05,
        )
    )
    raw = streaming.raw[0]
    gap = (raw["online_share"] - raw["offline_share"]) * 100
    ctx.targets.append(
        Target(
            "online padding share vs offline (buffer_size=1000)",
            "within 2 points",
            f"{gap:+.2f} points",
            abs(gap) <= 2,
        )
    )
    overhead = raw["pack_row_s"] / raw["collate_row_s"]
    ctx.targets.append(
        Target("online packing per row vs collate", "< 5%", f"{overhead:.2%}", overhead < 0.05)
    )
    for name, key, goal in (
        ("add_lengths num_proc=2 vs LengthEstimator loop", "loop_s", 1.7),
        ("add_lengths num_proc=2 vs decoding loop", "decode_s", 10.0),
    ):
        ratio = raw[key] / raw["map_s"]
        ctx.targets.append(
            Target(name, f"≥ {goal}×", f"{ratio:.2f}×", (ratio >= goal) if full else None)
        )
    return [sampler, streaming]


def main(argv: list[str] | None = None) -> int:
    """``python -m benches.scale [--quick]``: this benchmark alone; a full run writes the
    ``scale`` block of docs/packing.md (and nothing else)."""
    argv = sys.argv[1:] if argv is None else argv
    import gc

    from vlm_collate.testing import qwen2_5_vl_processor

    from . import readme
    from .common import Settings, machine
    from .run_all import _markdown

    quick = "--quick" in argv
    started, load_before = time.perf_counter(), os.getloadavg()
    processor = qwen2_5_vl_processor()
    gc.collect()
    gc.freeze()

    def advance(description: str) -> None:
        print(f"[{time.perf_counter() - started:7.1f} s] {description}", flush=True)

    ctx = Context(Settings(quick=quick), processor, advance=advance)
    tables = run(ctx)
    where = {**machine(), "load_average_before": load_before}
    text = _markdown(tables, ctx.targets, where, time.perf_counter() - started, quick)
    print(text)
    if not quick:
        print("written:", readme.write_block(readme.block_file("scale"), "scale", text))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
