"""Peak memory of one collate call against the size of what it returns.

Method. Each measurement runs in a forked child process (it inherits the warm
processor and caches). The child first fixes glibc's malloc thresholds
(``mallopt``: buffers of 64 KiB or more are ``mmap``-ed and unmapped when freed,
and free heap memory is trimmed) so memory a call frees is given back and memory
it takes is visible, runs the call once to warm up, frees everything and trims
the heap, then for each repeat: reads ``VmRSS``, resets the peak resident size
(writing ``5`` to ``/proc/self/clear_refs``), makes the call, and reads
``VmHWM``. Peak = ``VmHWM - VmRSS`` before the call: every byte the call made
resident at its worst moment, whoever allocated it (Python, numpy, torch, the
Rust engine, the tokenizer), the returned batch included. Output = the bytes of
the storages of the returned tensors (shifted views count their whole storage).
The same child also reports ``tracemalloc``'s peak, which sees only memory
allocated through Python's allocators (Python objects and numpy buffers), not
torch's or the engine's.
"""

from __future__ import annotations

import ctypes
import gc
import multiprocessing
import os
import statistics
import tracemalloc
from collections.abc import Callable
from typing import Any

import torch

from vlm_collate import build_labels, qwen2_5_collate_fn

from . import baselines, data, end_to_end
from .common import Context, Table, Target, fmt_mib

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


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


def output_bytes(out: Any) -> int:
    """Bytes of the distinct storages of the tensors in ``out`` (a mapping or a tensor)."""
    values = [out] if isinstance(out, torch.Tensor) else list(out.values())
    seen: dict[int, int] = {}
    for value in values:
        if isinstance(value, torch.Tensor):
            storage = value.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())


def _child(fn: Callable[[], Any], repeats: int, conn: Any) -> None:
    try:
        conn.send(_measure_here(fn, repeats))
    except BaseException as err:  # noqa: BLE001 - reported to the parent
        conn.send({"error": f"{type(err).__name__}: {err}"})
    conn.close()


def _measure_here(fn: Callable[[], Any], repeats: int) -> dict[str, Any]:
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(_M_MMAP_THRESHOLD, 64 * 1024)
        libc.mallopt(_M_TRIM_THRESHOLD, 64 * 1024)
        trim = libc.malloc_trim
    except OSError:  # not glibc
        trim = None
    result: dict[str, Any] = {"peaks": []}
    out = fn()
    result["output"] = output_bytes(out)
    for _ in range(repeats):
        del out
        gc.collect()
        if trim is not None:
            trim(0)
        before = _status("VmRSS")
        if not _reset_peak():
            result["peaks"] = None
            out = fn()
            break
        out = fn()
        result["peaks"].append(_status("VmHWM") - before)
    del out
    gc.collect()
    tracemalloc.start()
    fn()
    result["tracemalloc"] = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return result


def measure_peak(fn: Callable[[], Any], repeats: int) -> dict[str, Any]:
    """Peak resident bytes of ``fn()`` (median over repeats), in a forked child."""
    context = multiprocessing.get_context("fork")
    receive, send = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(fn, repeats, send))
    # Frozen objects are skipped by the child's gc.collect(), which would otherwise
    # write to (and so copy) every page of the parent's objects.
    frozen = gc.get_freeze_count() > 0
    gc.freeze()
    try:
        process.start()
        send.close()
        result = receive.recv()
        process.join()
    finally:
        if not frozen:
            gc.unfreeze()
    if "error" in result:
        raise RuntimeError(f"memory measurement failed in the child: {result['error']}")
    peaks = result.pop("peaks")
    result["peak"] = None if not peaks else statistics.median(peaks)
    return result


def cases(ctx: Context) -> dict[str, Callable[[], Any]]:
    s = ctx.settings
    processor = ctx.processor
    sc = end_to_end.scenarios(s)[0]
    examples = end_to_end.examples_for(ctx.tokenizer, seed=0, **sc)
    image_case = f"{sc['batch']} × ({sc['image']}² image, {sc['turns']} turns)"
    methods = end_to_end.methods_for(processor, examples)
    length, turns = (512, 4) if s.quick else (16384, 16)
    ids, mask, conversations = data.label_batch(ctx.tokenizer, s.batch, length, turns, seed=3)
    text = [{"conversation": c} for c in conversations]
    ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
    text_case = f"{s.batch} × (text, {length:,} tokens, {turns} turns)"
    rendered = [processor.apply_chat_template(c, tokenize=False) for c in conversations]
    return {
        f"vlm_collate, {image_case}": methods["vlm_collate"],
        f"processor alone, {image_case}": methods["processor alone"],
        f"seed-style collate, {image_case}": methods["seed-style"],
        f"vlm_collate, {text_case}": lambda: qwen2_5_collate_fn(text, processor),
        f"processor alone, {text_case}": lambda: processor(
            text=rendered, padding=True, padding_side="right", return_tensors="pt"
        ),
        f"seed-style collate, {text_case}": lambda: baselines.seed_style_collate(text, processor),
        f"build_labels only, {text_case}": lambda: build_labels(
            ids_t, conversations, processor, attention_mask=mask_t
        ),
    }


def steps(settings) -> int:
    return 7


def run(ctx: Context) -> list[Table]:
    repeats = 1 if ctx.settings.quick else 3
    table = Table(
        "memory",
        "Peak memory of one call against the size of its output",
        ["call", "output", "peak RSS increase", "peak / output", "tracemalloc peak"],
    )
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for name, fn in cases(ctx).items():
        ctx.advance(f"memory {name.split(',')[0]}")
        r = measure_peak(fn, repeats)
        ratio = None if r["peak"] is None else r["peak"] / r["output"]
        table.rows.append(
            [
                name,
                fmt_mib(r["output"]),
                "n/a" if r["peak"] is None else fmt_mib(r["peak"]),
                "n/a" if ratio is None else f"{ratio:.2f}×",
                fmt_mib(r["tracemalloc"]),
            ]
        )
        table.raw.append({"call": name, **r, "ratio": ratio})
    table.notes.append(
        "peak RSS increase: VmHWM after the call minus VmRSS before it, in a forked child with "
        "fixed malloc thresholds (see benches/memory.py); median of "
        f"{repeats} call(s). tracemalloc sees Python and numpy allocations only."
    )
    first = table.raw[0]
    floor = table.raw[1]
    if first["ratio"] is not None:
        extra = ""
        if floor["ratio"] is not None:
            extra = f" (processor alone: {floor['ratio']:.2f}×)"
        ctx.targets.append(
            Target(
                f"collate peak / output ({first['call'].split(', ', 1)[1]})",
                "≤ 1.2×",
                f"{first['ratio']:.2f}×{extra}",
                first["ratio"] <= 1.2,
            )
        )
    text_row, text_floor = table.raw[3], table.raw[4]
    if text_row["ratio"] is not None:
        ctx.targets.append(
            Target(
                f"collate peak / output ({text_row['call'].split(', ', 1)[1]})",
                "≤ 1.2×",
                f"{text_row['ratio']:.2f}× (processor alone: {text_floor['ratio']:.2f}×)",
                text_row["ratio"] <= 1.2,
            )
        )
    return [table]


if __name__ == "__main__":
    import sys

    from .run_all import main

    sys.exit(main(["--only", "memory", *sys.argv[1:]]))
