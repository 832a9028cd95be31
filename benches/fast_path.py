"""The fast path (issue 14) against the processor call and the collates built on it, on
real Qwen2.5-VL processors (offline, real vocabulary), plus peak memory against output.

Methods, each on the same examples:

* processor alone: ``processor(text=..., images=..., padding=True)`` on texts already
  rendered (the floor of any collate that calls the processor);
* fast path: ``qwen2_5_collate_fn(examples, processor)`` (the default);
* collate, processor path: the same with ``fast_path=False`` (vlm_collate before issue 14);
* seed-style: render, processor, seed-style labels, shape-based shift;
* TRL-style: render, processor, labels = ids with padding and image tokens masked in Python.

448² images use the benchmark's processor (``max_pixels`` 448², no resize needed); 1024²
images a processor with ``max_pixels`` 1024² (each image resized to 1008²).

    python -m benches.fast_path [--quick]   # also rewrites the README's fast-path block
"""

from __future__ import annotations

from typing import Any

import torch

from vlm_collate import VLMCollator, qwen2_5_collate_fn
from vlm_collate.formats.conversation import with_list_content

from . import baselines, data, dataloader, memory
from .common import Context, Table, Target, fmt_mib, fmt_ratio, fmt_time, measure_all

METHODS = ("processor alone", "fast path", "collate, processor path", "seed-style", "TRL-style")
SKIPPED = {(1024, 4, 32)}
"""Cells left out of a full run: 3.1 GiB of float32 pixels per batch (about 8 GiB at the
processor's peak), more than a shared benchmark machine should be asked for."""


def cells(settings) -> list[dict[str, int]]:
    if settings.quick:
        return [{"image": 112, "per_sample": 1, "batch": 2}]
    return [
        {"image": image, "per_sample": k, "batch": b}
        for image in (448, 1024)
        for k in (1, 4)
        for b in (8, 32)
        if (image, k, b) not in SKIPPED
    ]


LOADER_COLLATES = ("fast path", "processor path")


def steps(settings) -> int:
    return len(cells(settings)) + 3 + len(LOADER_COLLATES) * len(dataloader.WORKERS)


def _processor(ctx: Context, image: int) -> Any:
    if image <= 448:
        return ctx.processor
    if "fast_path_1024" not in ctx.extra:
        from vlm_collate.testing import qwen2_5_vl_processor

        ctx.extra["fast_path_1024"] = qwen2_5_vl_processor(max_pixels=1024 * 1024)
    return ctx.extra["fast_path_1024"]


def examples_for(tokenizer: Any, batch: int, image: int, per_sample: int, seed: int = 0):
    """``batch`` two-turn examples whose first message holds ``per_sample`` pictures."""
    maker = data.TextMaker(tokenizer, seed=seed)
    examples = []
    for i in range(batch):
        conversation = maker.conversation(256, 2)
        pictures = [
            {"type": "image", "image": data.image(image, seed * 10_000 + i * 10 + k)}
            for k in range(per_sample)
        ]
        first = conversation[0]["content"]
        conversation[0] = {"role": "user", "content": [*pictures, {"type": "text", "text": first}]}
        examples.append({"conversation": conversation})
    return examples


def _images(conversations: list) -> list:
    return [
        item["image"]
        for c in conversations
        for m in c
        if isinstance(m["content"], list)
        for item in m["content"]
        if item["type"] == "image"
    ]


def trl_style_collate(examples: list[dict], processor: Any) -> dict[str, Any]:
    """What TRL's vision collator does: render, one processor call, labels = the ids with
    padding and image tokens set to -100 in Python."""
    conversations = [e["conversation"] for e in examples]
    texts = [
        processor.apply_chat_template(with_list_content(c), tokenize=False) for c in conversations
    ]
    batch = dict(
        processor(
            text=texts,
            images=_images(conversations) or None,
            padding=True,
            padding_side="right",
            return_tensors="pt",
        )
    )
    labels = batch["input_ids"].clone()
    labels[labels == processor.tokenizer.pad_token_id] = -100
    labels[labels == processor.image_token_id] = -100
    batch["labels"] = labels
    return batch


def methods_for(processor: Any, examples: list[dict]) -> dict[str, Any]:
    conversations = [e["conversation"] for e in examples]
    texts = [
        processor.apply_chat_template(with_list_content(c), tokenize=False) for c in conversations
    ]
    images = _images(conversations)

    def processor_alone():
        return processor(
            text=texts, images=images, padding=True, padding_side="right", return_tensors="pt"
        )

    return {
        "processor alone": processor_alone,
        "fast path": lambda: qwen2_5_collate_fn(examples, processor),
        "collate, processor path": lambda: qwen2_5_collate_fn(examples, processor, fast_path=False),
        "seed-style": lambda: baselines.seed_style_collate(examples, processor),
        "TRL-style": lambda: trl_style_collate(examples, processor),
    }


def _same(fast: Any, slow: Any) -> bool:
    return all(torch.equal(fast[k], slow[k]) for k in slow)


def _time_table(ctx: Context) -> Table:
    s = ctx.settings
    table = Table(
        "fast_path",
        "Fast path against the processor and processor-based collates, median time per batch",
        [
            "batch",
            "pixel_values",
            *METHODS,
            "processor / fast",
            "collate (processor path) / fast",
            "seed-style / fast",
            "TRL-style / fast",
        ],
    )
    for k, cell in enumerate(cells(s)):
        image, per, batch = cell["image"], cell["per_sample"], cell["batch"]
        ctx.advance(f"fast path {batch}×{per}×{image}²")
        processor = _processor(ctx, image)
        examples = examples_for(ctx.tokenizer, batch, image, per, seed=k)
        methods = methods_for(processor, examples)
        fast, slow = methods["fast path"](), methods["collate, processor path"]()
        equal = _same(fast, slow)
        pixels = fast["pixel_values"]
        times = {n: t.median_s for n, t in measure_all(methods, s).items()}
        ratios = {n: times[n] / times["fast path"] for n in METHODS if n != "fast path"}
        table.rows.append(
            [
                f"{batch} × {per} × {image}²",
                f"{tuple(pixels.shape)} {fmt_mib(pixels.numel() * pixels.element_size())}",
                *[fmt_time(times[n]) for n in METHODS],
                *[fmt_ratio(ratios[n]) for n in METHODS if n != "fast path"],
            ]
        )
        table.raw.append(
            {**cell, "times": times, "ratios": ratios, "equal_to_processor_path": equal}
        )
        if image == 448 and per == 1 and batch == 8 or s.quick and k == 0:
            ctx.targets.append(
                Target(
                    f"fast path vs processor alone ({batch} × {per} × {image}²)",
                    "≥ 2× faster",
                    fmt_ratio(ratios["processor alone"]),
                    ratios["processor alone"] >= 2.0,
                )
            )
    equal = all(r["equal_to_processor_path"] for r in table.raw)
    table.notes.append(
        "every batch of the fast path equals the processor path's (all keys, pixel values bit "
        "for bit)"
        if equal
        else "the fast path's batch DIFFERS from the processor path's on this data"
    )
    table.notes.append(
        "1 torch thread (as in a DataLoader worker); the fast path's pixels run on every core "
        "this process may use. Random-noise images."
    )
    if not s.quick:
        table.notes.append(
            "left out: "
            + ", ".join(f"{b} × {k} × {i}²" for i, k, b in sorted(SKIPPED))
            + " (3.1 GiB of pixels per batch)"
        )
    return table


def _memory_table(ctx: Context) -> Table:
    s = ctx.settings
    cell = cells(s)[0] if s.quick else {"image": 448, "per_sample": 1, "batch": 8}
    processor = _processor(ctx, cell["image"])
    examples = examples_for(ctx.tokenizer, cell["batch"], cell["image"], cell["per_sample"])
    methods = methods_for(processor, examples)
    where = f"{cell['batch']} × {cell['per_sample']} × {cell['image']}²"
    table = Table(
        "fast_path_memory",
        f"Fast path: peak memory of one call against its output ({where})",
        ["call", "output", "peak RSS increase", "peak / output"],
    )
    repeats = 1 if s.quick else 3
    from vlm_collate.pipeline.fast_path import BUFFERS

    def without_pool(fn: Any) -> Any:
        # The forked child inherits this process's output pool, already paged in by the
        # time table, and the measurement lets each batch go before the next call: with
        # the pool off (keep no storage), each call pays for its own output, as a first
        # call does (runs in the child only: the parent's pool is untouched).
        def call() -> Any:
            BUFFERS.keep = 0
            return fn()

        return call

    for name in ("fast path", "processor alone", "collate, processor path"):
        ctx.advance(f"fast path memory: {name}")
        r = memory.measure_peak(without_pool(methods[name]), repeats)
        ratio = None if r["peak"] is None else r["peak"] / r["output"]
        table.rows.append(
            [
                name,
                fmt_mib(r["output"]),
                "n/a" if r["peak"] is None else fmt_mib(r["peak"]),
                "n/a" if ratio is None else f"{ratio:.2f}×",
            ]
        )
        table.raw.append({"call": name, **r, "ratio": ratio})
        if name == "fast path" and ratio is not None:
            ctx.targets.append(
                Target(
                    f"fast path peak / output ({where})", "≤ 1.2×", f"{ratio:.2f}×", ratio <= 1.2
                )
            )
    table.notes.append(
        "measured as in the memory table (forked child, VmHWM - VmRSS before the call), the "
        "output pool off in the child (no storage reused, as in a first call: steady-state "
        "reuse is in the families block's memory table); output: the bytes of the returned "
        "tensors (labels and shifted views included)."
    )
    return table


def _dataloader_table(ctx: Context) -> Table:
    """Samples per second through a DataLoader, fast path against the processor path,
    measured as in the dataloader table (steady state, persistent forked workers)."""
    cfg = dataloader.config(ctx.settings)
    data_set = dataloader.Conversations(
        ctx.tokenizer, cfg["size"], cfg["image"], cfg["text_tokens"]
    )
    collates = {
        "fast path": VLMCollator(ctx.processor),
        "processor path": VLMCollator(ctx.processor, fast_path=False),
    }
    workers = dataloader.WORKERS
    table = Table(
        "fast_path_dataloader",
        f"Fast path: DataLoader throughput ({cfg['size']} samples, batch {cfg['batch']}, one "
        f"{cfg['image']}² image and 2 turns per sample)",
        ["collate_fn", *[f"num_workers={w}" for w in workers]],
    )
    rates: dict[str, dict[int, float]] = {}
    for name in LOADER_COLLATES:
        rates[name] = {}
        for w in workers:
            ctx.advance(f"fast path dataloader: {name}, workers={w}")
            result = dataloader.throughput(data_set, collates[name], cfg["batch"], w)
            rates[name][w] = result["samples"] / result["steady_s"]
            table.raw.append({"collate_fn": name, "workers": w, **result})
        table.rows.append([name, *[f"{rates[name][w]:.1f} samples/s" for w in workers]])
    ratio = {w: rates["fast path"][w] / rates["processor path"][w] for w in workers}
    table.rows.append(["fast / processor path", *[fmt_ratio(ratio[w]) for w in workers]])
    table.raw.append({"fast_over_processor_path": ratio})
    most = workers[-1]
    ctx.targets.append(
        Target(
            f"DataLoader samples/s, fast path vs processor path ({most} workers)",
            "≥ 1.5×",
            fmt_ratio(ratio[most]),
            ratio[most] >= 1.5,
        )
    )
    table.notes.append(
        "VLMCollator with the default fast path against fast_path=False (the processor "
        "path, vlm_collate before issue 14). Steady state: the second of two epochs through "
        "one DataLoader with persistent forked workers; the dataset makes each sample's "
        "random image in __getitem__. In a worker the fast path's pixels use 1 thread and "
        "are written straight into shared memory; with 0 workers they use every core."
    )
    return table


def _one_core(fn: Any) -> Any:
    """``fn`` run with this process on one core (the fast path's pixels then use one
    thread, as in a DataLoader worker)."""
    import os

    def call() -> Any:
        cores = os.sched_getaffinity(0)
        os.sched_setaffinity(0, {min(cores)})
        try:
            return fn()
        finally:
            os.sched_setaffinity(0, cores)

    return call


def glm_gemma_cases(rng: Any) -> dict[str, tuple[Any, list, list, list]]:
    """GLM-4.1V and Gemma 3 image cases for :func:`family_rows` (8 × one 448² image),
    each processor at its model's published preprocessing sizes (GLM-4.1V 12,544 to
    9,633,792 pixels; Gemma 3 896²)."""
    import numpy as np

    from vlm_collate.testing.families import gemma3_processor, glm4v_processor

    def images() -> list:
        return [[rng.integers(0, 256, (448, 448, 3), dtype=np.uint8)] for _ in range(8)]

    return {
        "GLM-4.1V images (8 × 448², published pixel limits)": (
            glm4v_processor(min_pixels=12_544, max_pixels=9_633_792),
            ["<|begin_of_image|><|image|><|end_of_image|>x"] * 8,
            images(),
            [[] for _ in range(8)],
        ),
        "Gemma 3 images (8 × 448² resized to 896²)": (
            gemma3_processor(image_size=896),
            ["<start_of_image>x"] * 8,
            images(),
            [[] for _ in range(8)],
        ),
    }


def timed_video_cases(rng: Any, frames: int) -> dict[str, tuple[Any, list, list, list]]:
    """Qwen3-VL and GLM-4.1V video cases for :func:`family_rows` (4 clips of ``frames``
    frames of 448², published pixel limits): Qwen3-VL's video processor samples the frames
    itself (fps 2 over its 24 fps default, at least 4), GLM-4.1V's are taken as given (as
    ``glm4v_collate_fn`` calls it); both write frame timestamps into the text."""
    import numpy as np

    from vlm_collate.testing.families import glm4v_processor, qwen3_vl_processor

    def clips() -> list:
        return [[rng.integers(0, 256, (frames, 448, 448, 3), dtype=np.uint8)] for _ in range(4)]

    return {
        f"Qwen3-VL videos (4 × {frames} frames of 448², sampled by the processor)": (
            qwen3_vl_processor(min_pixels=65_536, max_pixels=16_777_216),
            ["<|vision_start|><|video_pad|><|vision_end|>x"] * 4,
            [[] for _ in range(4)],
            clips(),
        ),
        f"GLM-4.1V videos (4 × {frames} frames of 448², as given)": (
            glm4v_processor(min_pixels=12_544, max_pixels=9_633_792),
            ["<|begin_of_video|><|video|><|end_of_video|>x"] * 4,
            [[] for _ in range(4)],
            clips(),
        ),
    }


def family_rows(ctx: Context) -> list[tuple[str, dict[str, Any]]]:
    """Per family and media kind of the fast path (issue 22): the processor call alone
    against the fast encoding of the same texts and media, both on one core; each row
    also says whether the two outputs are equal (every key, pixels bit for bit)."""
    import numpy as np

    from vlm_collate.pipeline.fast_path import fast_encoding
    from vlm_collate.testing.builders import qwen2_5_vl_processor
    from vlm_collate.testing.families import qwen3_vl_processor

    rng = np.random.default_rng(0)
    image, video = (
        "<|vision_start|><|image_pad|><|vision_end|>",
        "<|vision_start|><|video_pad|><|vision_end|>",
    )
    frames = 4 if ctx.settings.quick else 16
    cases = {
        "Qwen3-VL images (8 × 448², downscaled)": (
            qwen3_vl_processor(),
            [image + "x"] * 8,
            [[rng.integers(0, 256, (448, 448, 3), dtype=np.uint8)] for _ in range(8)],
            [[] for _ in range(8)],
        ),
        f"Qwen2.5-VL videos (4 × {frames} frames of 448²)": (
            qwen2_5_vl_processor(),
            [video + "x"] * 4,
            [[] for _ in range(4)],
            [[rng.integers(0, 256, (frames, 448, 448, 3), dtype=np.uint8)] for _ in range(4)],
        ),
    }
    cases.update(glm_gemma_cases(rng))
    cases.update(timed_video_cases(rng, frames))
    rows = []
    for name, (processor, texts, images, videos) in cases.items():
        ctx.advance(f"fast path family: {name}")
        if getattr(processor, "video_processor", None) is not None:
            processor.video_processor.cap_pixels_per_frame = False  # its default, no warning
        kwargs: dict[str, Any] = {}
        if any(images):  # Gemma 3 takes them per sample
            nested = type(processor).__name__ == "Gemma3Processor"
            kwargs["images"] = images if nested else [i for s in images for i in s]
        if any(videos):
            kwargs["videos"] = [v for s in videos for v in s]

        if type(processor).__name__ == "Glm4vProcessor" and any(videos):
            kwargs["do_sample_frames"] = False  # as glm4v_collate_fn calls it

        def alone(processor=processor, texts=texts, kwargs=kwargs) -> Any:
            return processor(
                text=texts, padding=True, padding_side="right", return_tensors="pt", **kwargs
            )

        def fast(processor=processor, texts=texts, images=images, videos=videos) -> Any:
            return fast_encoding(processor, texts, images, videos)

        a, b = dict(alone()), fast()
        equal = b is not None and list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)
        times = measure_all({"processor": _one_core(alone), "fast": _one_core(fast)}, ctx.settings)
        rows.append(
            (
                name,
                {
                    "processor_s": times["processor"].median_s,
                    "fast_s": times["fast"].median_s,
                    "equal": equal,
                },
            )
        )
    return rows


def _family_table(ctx: Context) -> Table:
    table = Table(
        "fast_path_families",
        "Fast path per family and media kind, one core for both sides, median time per call",
        ["family and media", "processor alone", "fast path", "processor / fast", "equal"],
    )
    for name, r in family_rows(ctx):
        ratio = r["processor_s"] / r["fast_s"]
        table.rows.append(
            [
                name,
                fmt_time(r["processor_s"]),
                fmt_time(r["fast_s"]),
                fmt_ratio(ratio),
                "yes" if r["equal"] else "NO",
            ]
        )
        table.raw.append({"case": name, **r, "ratio": ratio})
    table.notes.append(
        "texts already rendered; processor call against fast_encoding on the same inputs, "
        "process pinned to one core (os.sched_setaffinity) for both; random-noise media."
    )
    return table


def run(ctx: Context) -> list[Table]:
    return [_time_table(ctx), _memory_table(ctx), _dataloader_table(ctx), _family_table(ctx)]


if __name__ == "__main__":
    import sys
    import tempfile
    from pathlib import Path

    from . import readme
    from .run_all import ROOT, main

    with tempfile.TemporaryDirectory() as out:
        code = main(["--only", "fast_path", "--out", out, *sys.argv[1:]])
        if "--quick" not in sys.argv[1:]:
            text = (Path(out) / "results.md").read_text()
            readme.write_block(ROOT / "README.md", "fast-path", text)
    sys.exit(code)
