"""Every family at its model's published preprocessing sizes: ``VLMCollator`` against the
processor alone, on one core (``os.sched_setaffinity`` to one CPU and one torch thread,
for both sides, as in a DataLoader worker) and on every core, with images decoded in
memory and as JPEG files on disk.

The offline test processors (``vlm_collate.testing.families``) shrink image sizes; here
each is built with the published sizes (:data:`PUBLISHED`), so the pixels cost what they
cost users. The samples: 8 conversations, one 448² image each, two exchanges of about
100 words. The processor alone gets the texts already rendered and the images (decoded
by PIL inside the timed call for the JPEG case, as a dataset's loader would); the collate
gets the rows (images, or file paths). Each family is timed in a fresh interpreter (no
heap left by other benchmarks), the two calls in back-to-back pairs (:func:`.common.paired`),
and once more on one core with glibc keeping freed memory (:data:`MALLOC_NEVER_TRIMS`).

Also: the label cost per family (``build_labels`` alone), Qwen2.5-VL videos (4 × 16 frames
of 448²), DataLoader throughput with 0 and 2 workers (``VLMCollator`` against a collate
that calls the processor), and first-call and steady-state peak memory against the output,
each in a fresh interpreter (VmHWM from ``/proc/self/status``). ``run(ctx)`` is the entry
of ``benches/run_all.py`` (``make bench``).

    python -m benches.families [--quick] [--only FAMILY ...]   # writes the families block
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from vlm_collate import VLMCollator, build_labels
from vlm_collate.formats.conversation import with_list_content
from vlm_collate.processor.fast_plan import fast_plan
from vlm_collate.processor.tiles import tile_plan
from vlm_collate.testing import families, qwen2_5_vl_processor

from . import data, dataloader
from .common import (
    Context,
    Settings,
    Table,
    Target,
    fmt_mib,
    fmt_ratio,
    fmt_time,
    machine,
    measure_all,
    paired,
)

PUBLISHED: dict[str, tuple[Callable[..., Any], dict[str, Any], str]] = {
    "qwen2_5_vl": (qwen2_5_vl_processor, {"min_pixels": 3136, "max_pixels": 12_845_056}, ""),
    "qwen3_vl": (families.qwen3_vl_processor, {"min_pixels": 65_536, "max_pixels": 16_777_216}, ""),
    "glm4v": (families.glm4v_processor, {"min_pixels": 12_544, "max_pixels": 9_633_792}, ""),
    "gemma3": (families.gemma3_processor, {"image_size": 896}, ""),
    "mllama": (families.mllama_processor, {"tile_size": 560}, "tiles of 560², up to 4"),
    "llama4": (families.llama4_processor, {"tile_size": 336, "max_patches": 16}, "tiles"),
    "pixtral": (families.pixtral_processor, {"longest_edge": 1024}, ""),
    "internvl": (families.internvl_processor, {"max_patches": 12}, "448² tiles + thumbnail"),
    "llava_onevision": (
        families.llava_onevision_processor,
        {"image_size": 384},
        "any-resolution grid pinpoints 384² to 2304², anyres_max_9",
    ),
    "idefics3": (
        families.idefics3_processor,
        {"longest_edge": 1456},
        "4 × 364; 364² sub-images + global image",
    ),
    "smolvlm": (
        families.smolvlm_processor,
        {"longest_edge": 2048},
        "SmolVLM-256M/500M: 4 × 512; 512² sub-images + global image",
    ),
}
"""Family -> (builder, the published sizes as its keyword arguments, a note)."""
QUICK = ("qwen2_5_vl", "gemma3")


@contextmanager
def one_core() -> Iterator[None]:
    """This process on its first allowed CPU with one torch thread, restored after."""
    cpus, threads = os.sched_getaffinity(0), torch.get_num_threads()
    os.sched_setaffinity(0, {min(cpus)})
    torch.set_num_threads(1)
    try:
        yield
    finally:
        os.sched_setaffinity(0, cpus)
        torch.set_num_threads(threads)


def examples_for(processor: Any, folder: Path, n: int = 8) -> tuple[list, list]:
    """``n`` rows with a decoded 448² image, and the same rows with a JPEG file path."""
    maker = data.TextMaker(processor.tokenizer, seed=0)
    decoded, files = [], []
    for i in range(n):
        conversation = maker.conversation(260, 2)
        image = data.image(448, i)
        path = folder / f"{i}.jpg"
        image.save(path, quality=90)
        for rows, value in ((decoded, image), (files, str(path))):
            first = dict(conversation[0])
            first["content"] = [
                {"type": "image", "image": value},
                {"type": "text", "text": first["content"]},
            ]
            rows.append({"conversation": [first, *conversation[1:]]})
    return decoded, files


def methods(processor: Any, decoded: list, files: list) -> dict[str, Callable[[], Any]]:
    collator = VLMCollator(processor)
    texts = [
        processor.apply_chat_template(with_list_content(e["conversation"]), tokenize=False)
        for e in decoded
    ]
    images = [[e["conversation"][0]["content"][0]["image"]] for e in decoded]
    paths = [[e["conversation"][0]["content"][0]["image"]] for e in files]

    def call(batch_images):
        return processor(
            text=texts, images=batch_images, padding=True, padding_side="right", return_tensors="pt"
        )

    return {
        "processor, decoded": lambda: call(images),
        "collate, decoded": lambda: collator(decoded),
        "processor, JPEG": lambda: call([[Image.open(p).convert("RGB") for p in s] for s in paths]),
        "collate, JPEG": lambda: collator(files),
    }


@contextmanager
def all_cores() -> Iterator[None]:
    """Every allowed CPU and as many torch threads (the processor's side), restored after."""
    threads = torch.get_num_threads()
    torch.set_num_threads(len(os.sched_getaffinity(0)))
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _build(name: str) -> Any:
    builder, kwargs, _ = PUBLISHED[name]
    return builder(**kwargs)


MALLOC_NEVER_TRIMS = {
    "MALLOC_MMAP_THRESHOLD_": str(256 << 20),
    "MALLOC_TRIM_THRESHOLD_": str(1 << 30),
}
"""glibc settings under which freed memory stays in the process (no ``mmap`` for blocks
under 256 MiB, no trimming): a call's large temporaries reuse pages already faulted in."""

CELLS = (("1 core", "decoded"), ("1 core", "JPEG"), ("all cores", "decoded"), ("all cores", "JPEG"))


def timing_child(name: str, quick: bool, narrow: bool) -> dict[str, Any]:
    """In a fresh interpreter: the processor alone and the collate timed in pairs
    (:func:`.common.paired`) on one core and on every core, decoded images and JPEG
    files; ``narrow``: one core, decoded images only."""
    settings = Settings(quick=quick)
    processor = _build(name)
    cells: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        fns = methods(processor, *examples_for(processor, Path(tmp)))
        for cores, kind in CELLS[:1] if narrow else CELLS:
            with one_core() if cores == "1 core" else all_cores():
                pair = paired(fns[f"processor, {kind}"], fns[f"collate, {kind}"], settings)
            cells[f"{cores}, {kind}"] = {**pair.as_dict(), "ratio": pair.first_over_second}
    return cells


def _family_rows(ctx: Context, names: list[str]) -> tuple[Table, Table]:
    s = ctx.settings
    table = Table(
        "families",
        "Every family at its published preprocessing sizes: processor time / collate time "
        "(higher is better; 8 samples, one 448² image, two ~100-word exchanges)",
        [
            "family",
            "sizes",
            "fast path",
            "processor (1 core)",
            "collate (1 core)",
            "× (1 core, decoded)",
            "× (1 core, decoded, malloc never trims)",
            "× (1 core, JPEG)",
            "× (all cores, decoded)",
            "× (all cores, JPEG)",
        ],
    )
    labels = Table(
        "families_labels",
        "Label cost per family: build_labels on the processor's batch of the same 8 samples "
        "(1 core), against Qwen2.5-VL's",
        ["family", "build_labels", "/ Qwen2.5-VL"],
    )
    label_fns: dict[str, Callable[[], Any]] = {}
    flags = ["--quick"] if s.quick else []
    for name in names:
        ctx.advance(f"families: {name}")
        cells = fresh_child(["--timing-child", name, *flags])
        trimless = fresh_child(["--timing-child", name, "--narrow", *flags], MALLOC_NEVER_TRIMS)
        first = cells["1 core, decoded"]
        ratios = [cells[f"{c}, {k}"]["ratio"] for c, k in CELLS]
        processor = _build(name)
        kwargs, note = PUBLISHED[name][1], PUBLISHED[name][2]
        sizes = ", ".join(f"{k}={v:,}" for k, v in kwargs.items()) or "defaults"
        table.rows.append(
            [
                name,
                sizes + (f" ({note})" if note else ""),
                "yes"
                if fast_plan(processor) is not None or tile_plan(processor) is not None
                else "no (processor call)",
                fmt_time(first["first_s"]),
                fmt_time(first["second_s"]),
                fmt_ratio(ratios[0]),
                fmt_ratio(trimless["1 core, decoded"]["ratio"]),
                *[fmt_ratio(c) for c in ratios[1:]],
            ]
        )
        table.raw.append(
            {"family": name, "sizes": kwargs, "cells": cells, "malloc_never_trims": trimless}
        )
        goal = 2.5 if name.startswith("qwen") else 2.0
        ctx.targets.append(
            Target(
                f"{name}: processor / collate on one core (decoded images)",
                f"≥ {goal}×",
                fmt_ratio(ratios[0]),
                ratios[0] >= goal,
            )
        )
        with tempfile.TemporaryDirectory() as tmp:
            decoded, _ = examples_for(processor, Path(tmp))
            label_fns[name] = _labels_fn(processor, decoded)
        del processor
    # Every family's labels in the same rounds, so a drift in the machine's speed over
    # the run does not land on one family.
    with one_core():
        label_times = {k: t.median_s for k, t in measure_all(label_fns, s).items()}
    base = label_times.get("qwen2_5_vl")
    for name, seconds in label_times.items():
        relative = None if base is None else seconds / base
        labels.rows.append([name, fmt_time(seconds), fmt_ratio(relative)])
        labels.raw.append({"family": name, "build_labels_s": seconds, "over_qwen2_5_vl": relative})
    if base is not None and "glm4v" in label_times:
        relative = label_times["glm4v"] / base
        ctx.targets.append(
            Target(
                "GLM-4.1V label cost / Qwen2.5-VL's (build_labels, same samples)",
                "≤ 1.1×",
                fmt_ratio(relative),
                relative <= 1.1,
            )
        )
    table.notes.append(
        "× = processor alone / VLMCollator on the same samples, each family in a fresh "
        "interpreter (no heap left by other benchmarks), the two calls timed in back-to-back "
        "pairs, their order alternating, × the median of the pairs' ratios; processor and "
        "collate: the medians of their calls (1 core, decoded). 1 core: os.sched_setaffinity "
        "to one CPU and 1 torch thread for both sides (as in a DataLoader worker); all cores: "
        "every allowed CPU and as many torch threads. JPEG: the rows hold file paths; the "
        "processor's side opens them with PIL inside the timed call. Default glibc malloc, "
        "except the 'malloc never trims' column: another fresh interpreter with "
        + ", ".join(f"{k}={v}" for k, v in MALLOC_NEVER_TRIMS.items())
        + " for both sides, where freed memory stays in the process: the processor's large "
        "temporaries then reuse pages already faulted in and it runs much faster (the "
        "collate writes into reused storage either way)."
    )
    if any(row[2] != "yes" for row in table.rows):
        table.notes.append(
            "Families not on the fast path call their processor and run at about its speed "
            "(×≈1.0): their targets are not met until they get a fast path."
        )
    labels.notes.append(
        "build_labels(input_ids, conversations, processor, attention_mask) on the processor's "
        "output for the rows of the families table: the labels alone, whichever path "
        "(markers or the exact path) the family's template takes; every family's calls "
        "interleaved in the same rounds."
    )
    return table, labels


def _labels_fn(processor: Any, decoded: list) -> Callable[[], Any]:
    """``build_labels`` on the processor's batch of the ``decoded`` rows (its pixels not kept)."""
    conversations = [e["conversation"] for e in decoded]
    texts = [
        processor.apply_chat_template(with_list_content(c), tokenize=False) for c in conversations
    ]
    images = [[c[0]["content"][0]["image"]] for c in conversations]
    batch = processor(
        text=texts, images=images, padding=True, padding_side="right", return_tensors="pt"
    )
    ids, mask = batch["input_ids"], batch["attention_mask"]
    return lambda: build_labels(ids, conversations, processor, attention_mask=mask)


# --------------------------------------------------------------------------- videos

VIDEO = {"samples": 4, "frames": 16, "size": 448}
VIDEO_QUICK = {"samples": 2, "frames": 4, "size": 112}


def video_rows(processor: Any, samples: int, frames: int, size: int) -> list[dict]:
    maker = data.TextMaker(processor.tokenizer, seed=1)
    rng = np.random.default_rng(0)
    rows = []
    for _ in range(samples):
        conversation = maker.conversation(260, 2)
        clip = rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8)
        first = dict(conversation[0])
        first["content"] = [
            {"type": "video", "video": clip},
            {"type": "text", "text": first["content"]},
        ]
        rows.append({"conversation": [first, *conversation[1:]]})
    return rows


def _video_table(ctx: Context) -> Table:
    cfg = VIDEO_QUICK if ctx.settings.quick else VIDEO
    ctx.advance("families: Qwen2.5-VL videos")
    processor = _build("qwen2_5_vl")
    # The processor's own default, set explicitly (silences transformers' warning only).
    processor.video_processor.cap_pixels_per_frame = False
    rows = video_rows(processor, **cfg)
    collator = VLMCollator(processor)
    texts = [
        processor.apply_chat_template(with_list_content(r["conversation"]), tokenize=False)
        for r in rows
    ]
    clips = [r["conversation"][0]["content"][0]["video"] for r in rows]
    fns = {
        "processor": lambda: processor(
            text=texts, videos=clips, padding=True, padding_side="right", return_tensors="pt"
        ),
        "collate": lambda: collator(rows),
    }
    fast, slow = fns["collate"](), fns["processor"]()
    same = all(torch.equal(fast[k], slow[k]) for k in ("pixel_values_videos", "video_grid_thw"))
    with one_core():
        single = {k: t.median_s for k, t in measure_all(fns, ctx.settings).items()}
    with all_cores():
        every = {k: t.median_s for k, t in measure_all(fns, ctx.settings).items()}
    where = f"{cfg['samples']} × {cfg['frames']} frames of {cfg['size']}²"
    table = Table(
        "families_video",
        f"Qwen2.5-VL videos at its published sizes ({where}, two ~100-word exchanges each)",
        ["cores", "processor alone", "collate", "processor / collate"],
    )
    for label, times in (("1", single), ("all", every)):
        table.rows.append(
            [
                label,
                fmt_time(times["processor"]),
                fmt_time(times["collate"]),
                fmt_ratio(times["processor"] / times["collate"]),
            ]
        )
    table.raw.append({**cfg, "one_core": single, "all": every, "pixels_equal": same})
    ratio = single["processor"] / single["collate"]
    ctx.targets.append(
        Target(
            f"Qwen2.5-VL videos: processor / collate on one core ({where})",
            "≥ 3×",
            fmt_ratio(ratio),
            ratio >= 3.0,
        )
    )
    table.notes.append(
        "uint8 (T, H, W, 3) random clips; the collate's pixel_values_videos and video_grid_thw "
        + ("equal the processor's bit for bit" if same else "DIFFER from the processor's")
        + "; 1 core / all cores as in the families table."
    )
    return table


# --------------------------------------------------------------------------- DataLoader


class Rows(Dataset):
    """``size`` rows cycling over the JPEG-file rows (each row a fresh copy)."""

    def __init__(self, rows: list[dict], size: int):
        self.rows, self.size = rows, size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict:
        row = self.rows[index % len(self.rows)]
        return {"conversation": [dict(m) for m in row["conversation"]]}


class ProcessorCollate:
    """What a collate without vlm_collate does: render, open the files, one processor
    call, labels = ids with padding masked (no reply masking: the cheapest labels)."""

    def __init__(self, processor: Any):
        self.processor = processor

    def __call__(self, rows: list[dict]) -> dict:
        texts, images = [], []
        for row in rows:
            conversation = row["conversation"]
            texts.append(
                self.processor.apply_chat_template(with_list_content(conversation), tokenize=False)
            )
            images.append([Image.open(conversation[0]["content"][0]["image"]).convert("RGB")])
        batch = dict(
            self.processor(
                text=texts, images=images, padding=True, padding_side="right", return_tensors="pt"
            )
        )
        labels = batch["input_ids"].clone()
        labels[batch["attention_mask"] == 0] = -100
        batch["labels"] = labels
        return batch


def _dataloader_table(ctx: Context, names: list[str], folder: Path) -> Table:
    size = 8 if ctx.settings.quick else 32
    workers = dataloader.WORKERS
    table = Table(
        "families_dataloader",
        f"DataLoader throughput per family at its published sizes ({size} rows of a JPEG file "
        "and two ~100-word exchanges, batch 8): samples/s",
        [
            "family",
            *[f"{c}, workers={w}" for w in workers for c in ("collate", "processor in collate")],
            *[f"× (workers={w})" for w in workers],
        ],
    )
    for name in names:
        ctx.advance(f"families dataloader: {name}")
        processor = _build(name)
        sub = folder / f"loader-{name}"
        sub.mkdir()
        _, files = examples_for(processor, sub)
        dataset = Rows(files, size)
        collates = {"collate": VLMCollator(processor), "processor": ProcessorCollate(processor)}
        rates: dict[tuple[str, int], float] = {}
        for w in workers:
            for key, collate in collates.items():
                result = dataloader.throughput(dataset, collate, 8, w)
                rates[key, w] = result["samples"] / result["steady_s"]
                table.raw.append({"family": name, "collate_fn": key, "workers": w, **result})
        table.rows.append(
            [
                name,
                *[f"{rates[k, w]:.1f}" for w in workers for k in ("collate", "processor")],
                *[fmt_ratio(rates["collate", w] / rates["processor", w]) for w in workers],
            ]
        )
    table.notes.append(
        "collate: VLMCollator on the rows (it decodes the files); processor in collate: "
        "render, PIL open, one processor call, labels with padding masked. Steady state: the "
        "second of two epochs through one DataLoader with persistent forked workers (1 torch "
        "thread each); workers=0 runs in this process (1 torch thread, the fast path's pixels "
        "on every core)."
    )
    return table


# --------------------------------------------------------------------------- memory

MEMORY = ("qwen2_5_vl", "qwen3_vl", "gemma3")
MEMORY_QUICK = ("qwen2_5_vl",)
MEMORY_METHODS = ("collate, decoded", "processor, decoded")


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def memory_child(name: str, method: str, repeats: int) -> dict[str, Any]:
    """In a fresh interpreter: the peak resident size of the first call and of the
    steady-state calls above the idle process (its resident size once the processor and
    the rows are built, before any call), the high-water mark reset before each call."""
    import gc
    import resource

    from .memory import output_bytes

    torch.set_num_threads(1)
    processor = _build(name)
    with tempfile.TemporaryDirectory() as tmp:
        fn = methods(processor, *examples_for(processor, Path(tmp)))[method]
        gc.collect()
        source = "VmHWM after /proc/self/clear_refs"
        idle = _status("VmRSS")
        peaks, retained = [], 0
        for _ in range(1 + repeats):
            before = _status("VmRSS")
            if _reset_peak():
                out = fn()
                high = _status("VmHWM")
            else:  # no reset: ru_maxrss, a high-water mark since the process started
                source = "resource.getrusage ru_maxrss (never reset)"
                out = fn()
                high = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            # New pages of this call, plus what the previous call kept resident after its
            # batch was let go (storage a collator reuses is part of this call's memory).
            peaks.append(high - before + retained)
            output = output_bytes(out)
            held = _status("VmRSS")
            del out
            gc.collect()
            retained = max(0, output - (held - _status("VmRSS")))
    return {
        "output": output,
        "first": peaks[0],
        "steady": peaks[1:],
        "idle": idle,
        "source": source,
    }


def fresh_child(args: list[str], env_extra: dict[str, str] | None = None) -> Any:
    """``python -m benches.families ARGS`` in a fresh interpreter (``env_extra`` added to
    its environment): the JSON of its last output line."""
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(root / "python"), str(root), *filter(None, [env.get("PYTHONPATH")])]
    )
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.update(env_extra or {})
    command = [sys.executable, "-m", "benches.families", *args]
    done = subprocess.run(command, env=env, cwd=root, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"child {' '.join(args)} failed: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _memory_table(ctx: Context, names: list[str]) -> Table:
    repeats = 1 if ctx.settings.quick else 3
    table = Table(
        "families_memory",
        "Peak memory against output, first call in a fresh process and steady state "
        "(8 samples, one 448² image each, published sizes)",
        [
            "family",
            "call",
            "output",
            "first call peak",
            "first / output",
            "steady peak",
            "steady / output",
        ],
    )
    for name in _memory_names(ctx.settings, names):
        for method in MEMORY_METHODS:
            ctx.advance(f"families memory: {name}, {method.split(',')[0]}")
            r = fresh_child(["--memory-child", name, method, "--repeats", str(repeats)])
            steady = statistics.median(r["steady"])
            row = {"family": name, "call": method, **r, "steady_median": steady}
            table.raw.append(row)
            table.rows.append(
                [
                    name,
                    method.split(",")[0],
                    fmt_mib(r["output"]),
                    fmt_mib(r["first"]),
                    f"{r['first'] / r['output']:.2f}×",
                    fmt_mib(steady),
                    f"{steady / r['output']:.2f}×",
                ]
            )
            if method.startswith("collate"):
                ratio = steady / r["output"]
                ctx.targets.append(
                    Target(
                        f"{name}: steady-state collate peak / output",
                        "≤ 1.1×",
                        f"{ratio:.2f}×",
                        ratio <= 1.1,
                    )
                )
    sources = sorted({r["source"] for r in table.raw})
    table.notes.append(
        "one fresh interpreter (subprocess, not a fork) per row: it builds the processor and "
        f"the rows, then makes 1 + {repeats} calls; first = the first call, steady = median of "
        "the others, each after the previous batch was let go. Peak = resident high-water "
        "mark during the call minus resident size just before it, plus the part of the "
        "previous output that stayed resident after it was let go (storage a collator keeps "
        "for reuse: part of each call's memory, not free). "
        "Read from /proc/self/status, the high-water mark reset before each call "
        f"({'; '.join(sources)}); default malloc; 1 "
        "torch thread. Output: bytes of the returned tensors' storages. (tracemalloc would "
        "miss torch's and the engine's allocations; psutil has no peak on Linux.)"
    )
    return table


# --------------------------------------------------------------------------- entry points


def _memory_names(settings: Settings, names: list[str]) -> list[str]:
    return [n for n in (MEMORY_QUICK if settings.quick else MEMORY) if n in names]


def names_for(settings: Settings) -> list[str]:
    return list(QUICK) if settings.quick else list(PUBLISHED)


def steps(settings: Settings) -> int:
    names = names_for(settings)
    memory_rows = len(_memory_names(settings, names)) * len(MEMORY_METHODS)
    return 2 * len(names) + 1 + memory_rows


def run(ctx: Context, names: list[str] | None = None) -> list[Table]:
    names = names or names_for(ctx.settings)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        table, labels = _family_rows(ctx, names)
        video = _video_table(ctx)
        loader = _dataloader_table(ctx, names, folder)
    memory_table = _memory_table(ctx, names)
    return [table, labels, video, loader, memory_table]


def block_text(tables: list[Table], targets: list[Target], how: str) -> str:
    """The ``families`` docs block: how it was produced, the tables, the targets."""
    info = machine()
    lines = [
        f"{how}, {info['date']}, {info['cpu']}, {info['cores']} cores (shared; load average "
        f"{'/'.join(f'{v:.1f}' for v in info['load_average'])} after the run).",
        "",
    ]
    lines += [t.markdown() for t in tables]
    lines += [
        "**Targets (issue 22)**",
        "",
        "| target | goal | measured | met |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {t.name} | {t.goal} | {t.measured} | "
        f"{'n/a' if t.met is None else 'met' if t.met else 'not met'} |"
        for t in targets
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benches.families")
    parser.add_argument("--quick", action="store_true", help="two families, few repeats")
    parser.add_argument("--only", action="append", choices=sorted(PUBLISHED))
    parser.add_argument("--docs", type=Path, default=None, help="docs folder to write into")
    parser.add_argument(
        "--memory-child", nargs=2, metavar=("FAMILY", "METHOD"), help=argparse.SUPPRESS
    )
    parser.add_argument("--repeats", type=int, default=3, help=argparse.SUPPRESS)
    parser.add_argument("--timing-child", metavar="FAMILY", help=argparse.SUPPRESS)
    parser.add_argument("--narrow", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.timing_child:
        print(json.dumps(timing_child(args.timing_child, args.quick, args.narrow)))
        return 0
    if args.memory_child:
        print(json.dumps(memory_child(*args.memory_child, args.repeats)))
        return 0
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    settings = Settings(quick=args.quick)
    ctx = Context(settings, processor=None)
    tables = run(ctx, args.only)
    how = "`python -m benches.families" + (" --quick" if args.quick else "")
    how += "".join(f" --only {n}" for n in args.only or []) + "`"
    packing = Target(
        "packed vs padded collate time, same samples",
        "≤ 1.1×",
        "not measured by this command (python -m benches.run_all --only packing)",
        None,
    )
    text = block_text(tables, [*ctx.targets, packing], how)
    print(text)
    if args.docs is not None or not (args.quick or args.only):
        from .readme import write_block

        docs = args.docs or Path(__file__).resolve().parents[1] / "docs"
        print("wrote", write_block(docs, "families", text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
