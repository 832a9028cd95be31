"""The ``vlm-collate`` command: ``inspect``, ``check``, ``demo`` and ``bench``.

``inspect DATA`` collates examples from a JSON Lines file (or a saved
``datasets`` folder) and prints each sample's tokens with its training targets
highlighted; ``check`` reports how labels are built for a processor's chat
template; ``demo`` runs the sample dataset shipped in the package through a
DataLoader with workers; ``bench`` runs the repository's benchmark suite.
Errors are one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

PACKAGE_DIR = Path(__file__).resolve().parent
DEMO_BATCH_SIZE = 4
DEMO_WORKERS = 2


class CliError(Exception):
    """A problem the user can fix; printed as one line, without a traceback."""


# --------------------------------------------------------------------------- shared steps


def _stdout_console(color: str) -> Console:
    if color == "always":
        return Console(force_terminal=True, color_system="256", highlight=False)
    if color == "never":
        return Console(force_terminal=False, color_system=None, no_color=True, highlight=False)
    return Console(highlight=False)


def builtin_processor(status: Console) -> Any:
    """The offline Qwen2.5-VL processor on the real Qwen2 vocabulary."""
    from ..testing import qwen2_5_vl_processor

    with status.status("building the built-in Qwen2.5-VL processor (offline, Qwen2 vocabulary)"):
        return qwen2_5_vl_processor()


def saved_processor(directory: str) -> Any:
    """A processor saved with ``save_pretrained`` in ``directory``, loaded offline."""
    path = Path(directory)
    if not path.is_dir():
        raise CliError(
            f"--processor {directory}: no such folder (pass a folder written by "
            "processor.save_pretrained)"
        )
    from transformers import AutoProcessor

    try:
        return AutoProcessor.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise CliError(
            f"--processor {directory}: cannot load a processor saved with save_pretrained "
            f"({_one_line(err)})"
        ) from err


def collate_fn_named(name: str | None, processor: Any) -> Any:
    """The collate function for ``--family NAME`` (a key of ``COLLATE_FNS`` or a
    collate function's name), or the processor's registered one."""
    from ..collator import COLLATE_FNS, get_collate_fn

    if name is None:
        return get_collate_fn(processor)
    by_name = {key.lower(): fn for key, fn in COLLATE_FNS.items()}
    for fn in COLLATE_FNS.values():
        by_name.setdefault(fn.__name__.lower(), fn)
        by_name.setdefault(fn.__name__.lower().removesuffix("_collate_fn"), fn)
    fn = by_name.get(name.lower())
    if fn is None:
        raise CliError(f"--family {name}: unknown; known: {', '.join(sorted(COLLATE_FNS))}")
    return fn


def _one_line(err: BaseException) -> str:
    text = " ".join(line.strip() for line in str(err).strip().splitlines() if line.strip())
    return text or type(err).__name__


# --------------------------------------------------------------------------- inspect


def run_inspect(args: argparse.Namespace) -> int:
    from .datafiles import collate_records, read_records
    from .inspect_view import batch_view, render_html, render_terminal

    console = _stdout_console(args.color)
    status = Console(stderr=True)
    records = read_records(args.data, limit=args.limit or None)
    processor = saved_processor(args.processor) if args.processor else builtin_processor(status)
    collate_fn = collate_fn_named(args.family, processor)
    options: dict[str, Any] = {"shift": False, "on_overflow": args.on_overflow}
    if args.max_length is not None:
        options["max_length"] = args.max_length
    if args.on_unlabeled is not None:
        options["on_unlabeled"] = args.on_unlabeled
    batch = collate_records(records, collate_fn, processor, **options)
    view = batch_view(batch, processor, [r.where for r in records])
    console.print(
        f"{args.data}: {len(records)} samples · {type(processor).__name__} · "
        f"{collate_fn.__name__} · {', '.join(f'{k}={v}' for k, v in options.items())}",
        soft_wrap=True,
    )
    render_terminal(view, console)
    console.print(_labels_line(processor), soft_wrap=True, markup=False)
    if args.html:
        Path(args.html).write_text(render_html(view, f"vlm-collate inspect {args.data}"), "utf-8")
        console.print(f"wrote {args.html}", soft_wrap=True)
    return 0


# --------------------------------------------------------------------------- check


def _labels_line(processor: Any) -> str:
    """One line: how this processor's labels are built (markers or the exact path)."""
    from ..processor.check import check_template

    report = check_template(processor)
    if report.method == "markers":
        return f"labels: template markers verified on {len(report.verified)} probe shapes"
    return f"labels: exact path (differential rendering per conversation): {report.reason}"


def run_check(args: argparse.Namespace) -> int:
    """Prints how labels will be built for the processor's chat template (a template
    that renders no assistant reply is an error, exit code 1)."""
    from ..processor.check import check_template

    console = _stdout_console(args.color)
    processor = (
        saved_processor(args.processor)
        if args.processor
        else builtin_processor(Console(stderr=True))
    )
    report = check_template(processor)
    console.print(str(report), soft_wrap=True, highlight=False, markup=False)
    return 0


# --------------------------------------------------------------------------- demo


def run_demo(args: argparse.Namespace) -> int:
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from ..collator import VLMCollator
    from .datafiles import read_records, sample_data_path
    from .inspect_view import batch_view, render_terminal

    console = _stdout_console(args.color)
    status = Console(stderr=True)
    started = time.perf_counter()
    processor = builtin_processor(status)
    console.print(
        f"processor: {type(processor).__name__} on the Qwen2 vocabulary, built offline in "
        f"{time.perf_counter() - started:.1f} s"
    )
    path = sample_data_path()
    records = read_records(path, label=path.name)
    examples = [r.example for r in records]
    collator = VLMCollator(processor)
    console.print(f"data: {len(examples)} conversations shipped in the package ({path.name})")
    loader = DataLoader(
        examples,
        batch_size=args.batch_size,
        num_workers=args.workers,
        collate_fn=collator,
    )
    started = time.perf_counter()
    batches, samples, first = 0, 0, None
    with tqdm(total=len(examples), unit="sample", desc="collating", file=sys.stderr) as bar:
        for batch in loader:
            first = batch if first is None else first
            batches += 1
            report = getattr(batch, "report", None)
            count = report.samples if report is not None else len(batch["input_ids"])
            samples += count
            bar.update(count)
    elapsed = time.perf_counter() - started
    console.print(
        f"collated {samples} samples in {batches} batches with {args.workers} worker "
        f"processes: {elapsed:.2f} s, {samples / elapsed:.1f} samples/s"
    )
    shapes = ", ".join(
        f"{key} {tuple(value.shape)}" for key, value in first.items() if hasattr(value, "shape")
    )
    console.print(f"first batch (pre-shifted for training): {shapes}", soft_wrap=True)
    console.print("the first batch again with shift=False, so ids and labels align token by token:")
    head = records[: args.batch_size]
    unshifted = collator.collate_fn(
        [r.example for r in head], processor, **{**collator.options, "shift": False}
    )
    render_terminal(batch_view(unshifted, processor, [r.where for r in head]), console)
    return 0


# --------------------------------------------------------------------------- bench


def run_bench(args: argparse.Namespace) -> int:
    """Runs the benchmark suite, the ``benches`` package of a source checkout
    (importable when the command runs from the clone's root, as ``make bench`` does)."""
    try:
        module = importlib.import_module("benches.run_all")
    except ModuleNotFoundError as err:
        raise CliError(
            "the benchmark suite is the benches/ package of a source checkout; from the "
            "clone's root run `make bench` (or `python -m benches.run_all`)"
        ) from err
    argv = (["--quick"] if args.quick else []) + (["--out", args.out] if args.out else [])
    return int(module.main(argv) or 0)


# --------------------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vlm-collate",
        description="See what a vision-language model will be trained on.",
    )
    parser.add_argument(
        "--traceback", action="store_true", help="show the full traceback of an error"
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    color = argparse.ArgumentParser(add_help=False)
    color.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour the targets (auto: on a terminal); without colour they are «marked»",
    )

    inspect = commands.add_parser(
        "inspect",
        parents=[color],
        help="print each sample's tokens with its training targets highlighted",
        description="Collate DATA and print each sample's tokens with the targets "
        "highlighted, media placeholder runs collapsed, and a summary.",
    )
    inspect.add_argument(
        "data",
        metavar="DATA",
        help="a JSON Lines file of {'conversation': [...]} examples, or a folder saved by "
        "datasets' save_to_disk",
    )
    inspect.add_argument(
        "--processor",
        metavar="DIR",
        help="a processor folder written by save_pretrained "
        "(default: the built-in offline Qwen2.5-VL processor)",
    )
    inspect.add_argument(
        "--family",
        metavar="NAME",
        help="collate function: a key of COLLATE_FNS "
        "(default: the one registered for the processor's class)",
    )
    inspect.add_argument("--max-length", type=int, metavar="N", help="longest sample allowed")
    inspect.add_argument(
        "--on-overflow",
        choices=("error", "drop", "truncate"),
        default="error",
        help="what a sample longer than --max-length gets (default: error)",
    )
    inspect.add_argument(
        "--on-unlabeled",
        choices=("warn", "raise", "drop"),
        help="what a sample without an assistant turn gets (default: warn, kept)",
    )
    inspect.add_argument("--html", metavar="OUT.html", help="also write the view as an HTML page")
    inspect.add_argument(
        "--limit",
        type=int,
        default=8,
        metavar="N",
        help="inspect the first N samples (default 8; 0 for all)",
    )
    inspect.set_defaults(run=run_inspect)

    check = commands.add_parser(
        "check",
        parents=[color],
        help="report how labels will be built for a processor's chat template",
        description="Derive the chat template's assistant markers, verify them on probe "
        "conversations against differential rendering, and report the label path, the "
        "verified shapes and any shape the template refuses or does not render.",
    )
    check.add_argument(
        "--processor",
        metavar="DIR",
        help="a processor or tokenizer folder written by save_pretrained "
        "(default: the built-in offline Qwen2.5-VL processor)",
    )
    check.set_defaults(run=run_check)

    demo = commands.add_parser(
        "demo",
        parents=[color],
        help="collate the shipped sample dataset through a DataLoader with workers",
    )
    demo.add_argument("--batch-size", type=int, default=DEMO_BATCH_SIZE, metavar="N")
    demo.add_argument("--workers", type=int, default=DEMO_WORKERS, metavar="N")
    demo.set_defaults(run=run_demo)

    bench = commands.add_parser("bench", help="run the benchmark suite (benches/run_all.py)")
    bench.add_argument("--quick", action="store_true", help="a short run")
    bench.add_argument("--out", metavar="DIR", help="write the results to DIR")
    bench.set_defaults(run=run_bench)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command; returns its exit code."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    args = build_parser().parse_args(argv)
    if getattr(args, "limit", 0) is not None and getattr(args, "limit", 0) < 0:
        build_parser().error("--limit must be 0 or more")
    try:
        return args.run(args)
    except KeyboardInterrupt:
        print("vlm-collate: interrupted", file=sys.stderr)
        return 130
    except (CliError, ValueError, OSError, ImportError) as err:
        if args.traceback:
            raise
        print(f"vlm-collate: error: {_one_line(err)}", file=sys.stderr)
        return 1
    except Exception as err:
        if args.traceback:
            raise
        print(
            f"vlm-collate: error: {type(err).__name__}: {_one_line(err)} "
            "(rerun with --traceback for details)",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
