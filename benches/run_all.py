"""Runs every benchmark of vlm_collate with a progress bar, prints the tables,
writes ``results.json``, ``results.md`` and the scaling plot.

    python benches/run_all.py            # full run (minutes), results in bench-results/,
                                         # the docs' tables and docs/bench_results.json rewritten
    python benches/run_all.py --quick    # tiny sizes, few repeats (smoke test, CI)
    vlm-collate bench [--quick]          # the same, through the CLI

Everything runs in one process (memory measurements in forked children) with
``torch.set_num_threads(1)`` and tokenizer parallelism off, like a DataLoader
worker. Times are medians over repeats; ratios compare methods of the same run.
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
BENCHES = (
    "labels",
    "expand",
    "end_to_end",
    "dataloader",
    "memory",
    "packing",
    "fast_path",
    "families",
    "scale",
    "formats",
    "label_paths",
)


def _package() -> str:
    """The importable name of this folder's package, importable however we were loaded
    (``python benches/run_all.py``, ``-m benches.run_all``, runpy or importlib)."""
    if __package__:
        return __package__
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    return "benches"


def _module(name: str) -> ModuleType:
    return importlib.import_module(f"{_package()}.{name}")


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="vlm-collate bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes and few repeats")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="results folder (default: bench-results/, or bench-results/quick/ with --quick)",
    )
    parser.add_argument(
        "--only",
        action="append",
        choices=BENCHES,
        help="run only this benchmark (repeatable)",
    )
    parser.add_argument(
        "--plot-copy",
        type=Path,
        default=None,
        help="also copy the scaling plot here (default: docs/bench_scaling.png on a full "
        "run with every benchmark, none with --quick or --only)",
    )
    parser.add_argument(
        "--docs",
        type=Path,
        default=None,
        help="write the tables into the generated blocks of this docs folder (benchmarks.md, "
        "and fast_path.md when the fast path ran) (default: docs/, and docs/bench_results.json, "
        "on a full run with every benchmark; none otherwise)",
    )
    return parser.parse_args(argv)


def _progress() -> Any:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn("[bold]bench[/bold] {task.description:<44}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    )


def main(argv: list[str] | None = None) -> int:
    """Runs the benchmarks; returns 0. Results go to ``--out`` (see ``--help``)."""
    args = parse(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    threads, frozen = torch.get_num_threads(), gc.get_freeze_count() > 0
    torch.set_num_threads(1)
    try:
        return _run(args)
    finally:  # leave a calling process (the CLI, a test session) as it was
        torch.set_num_threads(threads)
        if not frozen:
            gc.unfreeze()


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from vlm_collate.testing import qwen2_5_vl_processor

    common = _module("common")
    settings = common.Settings(quick=args.quick)
    names = [n for n in BENCHES if not args.only or n in args.only]
    modules = {n: _module(n) for n in names}
    out = args.out or ROOT / "bench-results" / ("quick" if args.quick else "")
    out.mkdir(parents=True, exist_ok=True)
    plot_copy, docs = args.plot_copy, args.docs
    full = not args.quick and not args.only
    if plot_copy is None and full:
        plot_copy = ROOT / "docs" / "bench_scaling.png"
    if docs is None and full:
        docs = ROOT / "docs"

    started, load_before = time.perf_counter(), os.getloadavg()
    tables = []
    with _progress() as progress:
        total = 1 + sum(m.steps(settings) for m in modules.values())
        task = progress.add_task("building the Qwen2.5-VL processor", total=total)
        processor = qwen2_5_vl_processor()
        # Long-lived objects (the vocabulary above all) leave the collector's view, so a
        # collection between measurements costs microseconds, not a fifth of a second.
        gc.collect()
        gc.freeze()
        progress.advance(task)

        running = [False]  # a step of the current benchmark is in progress

        def advance(description: str) -> None:
            """Marks the previous step done and shows the one starting now."""
            progress.update(task, description=description, advance=1 if running[0] else 0)
            running[0] = True

        ctx = common.Context(settings, processor, advance=advance)
        per_module: dict[str, tuple[list, list]] = {}
        seconds = {"processor": time.perf_counter() - started}
        for name, module in modules.items():
            t0 = time.perf_counter()
            done = progress.tasks[0].completed
            running[0] = False
            before = len(ctx.targets)
            produced = module.run(ctx)
            tables += produced
            per_module[name] = (produced, ctx.targets[before:])
            # Keep the bar exact even if a benchmark reported fewer steps.
            progress.update(task, completed=done + module.steps(settings))
            seconds[name] = time.perf_counter() - t0
    elapsed = time.perf_counter() - started

    machine = common.machine()
    machine["load_average_before"] = load_before
    plot = None
    if "labels" in ctx.extra:
        plot_module = _module("plot")
        plot = plot_module.scaling_plot(
            ctx.extra["labels"],
            out / "bench_scaling.png",
            f"vlm_collate label building, B={settings.batch}, {machine['cpu']}, "
            f"{machine['cores']} cores, 1 torch thread",
        )
        if plot_copy is not None:
            plot_copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(plot, plot_copy)

    console = Console()
    _print(console, tables, ctx.targets, machine, elapsed, args.quick)
    (out / "results.md").write_text(_markdown(tables, ctx.targets, machine, elapsed, args.quick))
    (out / "results.json").write_text(
        json.dumps(
            {
                "quick": args.quick,
                "machine": machine,
                "elapsed_s": elapsed,
                "seconds_per_benchmark": seconds,
                "tables": {t.name: t.as_dict() for t in tables},
                "targets": [t.as_dict() for t in ctx.targets],
                "plot": None if plot is None else str(plot),
            },
            indent=1,
            default=str,
        )
    )
    console.print(f"results: {out / 'results.md'}, {out / 'results.json'}")
    if docs is not None:
        blocks = _module("readme")
        written = [blocks.write_block(docs, "bench-results", (out / "results.md").read_text())]
        fast_path_doc = blocks.block_file("fast-path", docs)
        if "fast_path" in per_module and fast_path_doc.exists():
            # The fast path's page shows its own tables and targets.
            own_tables, own_targets = per_module["fast_path"]
            text = _markdown(own_tables, own_targets, machine, elapsed, args.quick)
            written.append(blocks.write_block(fast_path_doc, "fast-path", text))
        families_doc = blocks.block_file("families", docs)
        if (
            "families" in per_module
            and families_doc.exists()
            and "<!-- families:start -->" in families_doc.read_text(encoding="utf-8")
        ):
            # The families section shows its own tables and the targets.
            own_tables, own_targets = per_module["families"]
            # The packing target, measured by the packing benchmark in this run.
            own_targets = own_targets + [t for t in ctx.targets if t.name.startswith("packed vs")]
            how = "`python -m benches.run_all" + (" --quick" if args.quick else "") + "`"
            text = _module("families").block_text(own_tables, own_targets, how)
            written.append(blocks.write_block(families_doc, "families", text))
        formats_doc = blocks.block_file("formats", docs)
        if (
            "formats" in per_module
            and formats_doc.exists()
            and "<!-- formats:start -->" in formats_doc.read_text(encoding="utf-8")
        ):
            # The formats section shows its own table and the 2% target.
            own_tables, own_targets = per_module["formats"]
            how = "`python -m benches.run_all" + (" --quick" if args.quick else "") + "`"
            text = _module("formats").block_text(own_tables, own_targets, how)
            written.append(blocks.write_block(formats_doc, "formats", text))
        label_doc = blocks.block_file("label-paths", docs)
        if (
            "label_paths" in per_module
            and label_doc.exists()
            and "<!-- label-paths:start -->" in label_doc.read_text(encoding="utf-8")
        ):
            # The label paths section: label path and cost per family, paths against turns.
            how = "`python -m benches.run_all" + (" --quick" if args.quick else "") + "`"
            text = _module("label_paths").block_text(per_module["label_paths"][0], how)
            written.append(blocks.write_block(label_doc, "label-paths", text))
        scale_doc = blocks.block_file("scale", docs)
        if "scale" in per_module and scale_doc.exists():
            # The packing page's Streaming section shows the scale simulation.
            own_tables, own_targets = per_module["scale"]
            text = _markdown(own_tables, own_targets, machine, elapsed, args.quick)
            written.append(blocks.write_block(scale_doc, "scale", text))
        if full:
            shutil.copyfile(out / "results.json", ROOT / "docs" / "bench_results.json")
        console.print(f"docs tables rewritten: {', '.join(map(str, written))}")
    if plot is not None:
        copy = f" (copied to {plot_copy})" if plot_copy is not None else ""
        console.print(f"plot: {plot}{copy}")
    return 0


def _verdict(met: bool | None) -> str:
    return "n/a" if met is None else "met" if met else "MISSED"


def _print(console: Any, tables: list, targets: list, machine: dict, elapsed: float, quick: bool):
    from rich.table import Table as RichTable

    for table in tables:
        rich = RichTable(title=table.title, title_justify="left")
        for column in table.columns:
            rich.add_column(column, justify="right" if column not in ("call", "method") else "left")
        for row in table.rows:
            rich.add_row(*row)
        console.print(rich)
        for note in table.notes:
            console.print(f"  • {note}", style="dim")
        console.print()
    rich = RichTable(title="Targets", title_justify="left")
    for column in ("target", "goal", "measured", "verdict"):
        rich.add_column(column)
    for t in targets:
        style = None if t.met is None else "green" if t.met else "red"
        rich.add_row(t.name, t.goal, t.measured, _verdict(t.met), style=style)
    console.print(rich)
    console.print(_machine_line(machine, elapsed, quick))


def _machine_line(machine: dict, elapsed: float, quick: bool) -> str:
    def load(values) -> str:
        return "/".join(f"{v:.1f}" for v in values)

    return (
        f"{'Quick' if quick else 'Full'} run of {machine['date']}: {elapsed:.0f} s on "
        f"{machine['cpu']}, "
        f"{machine['cores']} cores (`nproc`), load average (1/5/15 min) "
        f"{load(machine['load_average_before'])} before and {load(machine['load_average'])} "
        f"after; Python {machine['python']}, torch {machine['torch']} (1 thread), "
        f"transformers {machine['transformers']}."
    )


def _markdown(tables: list, targets: list, machine: dict, elapsed: float, quick: bool) -> str:
    lines = [_machine_line(machine, elapsed, quick), ""]
    for table in tables:
        lines.append(table.markdown())
    lines += [
        "**Targets**",
        "",
        "| target | goal | measured | verdict |",
        "|---|---|---|---|",
    ]
    lines += [f"| {t.name} | {t.goal} | {t.measured} | {_verdict(t.met)} |" for t in targets]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
