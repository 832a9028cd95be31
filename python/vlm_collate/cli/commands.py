"""The ``vlm-collate`` command: ``inspect``, ``check``, ``demo`` and ``bench``.

``inspect DATA`` collates examples from a JSON Lines file (or a saved
``datasets`` folder) and prints each sample's tokens with its training targets
highlighted; ``check`` reports how labels are built for a processor's chat
template; ``demo`` runs the sample dataset shipped in the package through a
DataLoader with workers and says what the batches hold (unshifted or pre-shifted
labels, read from the batch itself); ``bench`` runs the benchmark suite of a source
clone (``benches/``, found in the current folder or beside the package's own
``python/`` folder; never imported by the runtime package).
Errors are one line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import ModuleType
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


def label_alignment(batch: Mapping[str, Any]) -> str | None:
    """How ``batch``'s labels line up with its ``input_ids``, read from the batch itself:
    ``"unshifted"`` (every target ``labels[i] == input_ids[i]``: Hugging Face style, the
    model's loss shifts), ``"shifted"`` (a ``shift_labels`` key, or every target
    ``labels[i] == input_ids[i + 1]``: pre-shifted, the seed's contract), or None when
    the batch does not tell (no targets, or both readings fit)."""
    from ..engine import IGNORE_INDEX

    if "shift_labels" in batch:
        return "shifted"
    ids, labels = batch.get("input_ids"), batch.get("labels")
    if ids is None or labels is None or ids.shape != labels.shape:
        return None
    targets = labels != IGNORE_INDEX
    if not bool(targets.any()):
        return None
    same = bool((labels == ids)[targets].all())
    following = bool((labels[:, :-1] == ids[:, 1:])[targets[:, :-1]].all())
    if same and not following:
        return "unshifted"
    if following and not same:
        return "shifted"
    return None


ALIGNMENT_TEXT = {
    "unshifted": "labels unshifted (Hugging Face style: at every target labels[i] == "
    "input_ids[i]; the model's loss shifts them once)",
    "shifted": "labels pre-shifted (labels[i] is the token after input_ids[i]; "
    "shift_labels holds the same targets; use a loss that does not shift again)",
    None: "labels: their alignment with input_ids cannot be read from this batch",
}


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
    collator = VLMCollator(processor, shift=True) if args.shift else VLMCollator(processor)
    console.print(
        f"data: {len(examples)} conversations shipped in the package ({path.name}); "
        f"collator: {collator!r}",
        soft_wrap=True,
    )
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
    assert first is not None  # the shipped dataset is not empty (read_records checks)
    shapes = ", ".join(
        f"{key} {tuple(value.shape)}" for key, value in first.items() if hasattr(value, "shape")
    )
    alignment = label_alignment(first)
    console.print(f"first batch: {shapes}", soft_wrap=True)
    console.print(f"first batch: {ALIGNMENT_TEXT[alignment]}", soft_wrap=True, markup=False)
    head = records[: args.batch_size]
    if alignment == "unshifted":
        console.print("the first batch, token by token (targets highlighted):")
        view_batch = first
    else:
        console.print(
            "the first batch again with shift=False, so ids and labels align token by token:"
        )
        view_batch = collator.collate_fn(
            [r.example for r in head], processor, **{**collator.options, "shift": False}
        )
    render_terminal(batch_view(view_batch, processor, [r.where for r in head]), console)
    return 0


# --------------------------------------------------------------------------- bench

BENCH_HOW = (
    "clone the repository, then from its root run `make bench` "
    "(or `vlm-collate bench --quick`, or `python -m benches.run_all --help`)"
)


def bench_folders() -> list[Path]:
    """Where a source clone's ``benches/`` may be, in order: the current folder's, then
    the one beside the package's ``python/`` folder (``python/vlm_collate/../../benches``,
    present when the package runs from a clone: an editable install or PYTHONPATH)."""
    folders = [Path.cwd() / "benches"]
    if PACKAGE_DIR.parents[1].name == "python":  # a clone's python/vlm_collate, not site-packages
        folders.append(PACKAGE_DIR.parents[2] / "benches")
    return folders


def find_benches(folders: Sequence[Path] | None = None) -> Path | None:
    """The first of ``folders`` (default :func:`bench_folders`) that holds the benchmark
    suite (``__init__.py`` and ``run_all.py``), or None."""
    for folder in bench_folders() if folders is None else folders:
        if (folder / "__init__.py").is_file() and (folder / "run_all.py").is_file():
            return folder.resolve()
    return None


def _importable_suite() -> ModuleType | None:
    """``benches.run_all`` when a ``benches`` package is already importable (``python -m``
    from the clone's root, PYTHONPATH), else None."""
    try:
        module = importlib.import_module("benches.run_all")
    except ModuleNotFoundError as err:
        if err.name not in ("benches", "benches.run_all"):
            raise  # the suite is there but one of its imports is missing
        return None
    return module if callable(getattr(module, "main", None)) else None


def load_bench_suite(folders: Sequence[Path] | None = None) -> ModuleType:
    """The benchmark suite's ``run_all`` module of a source clone; a :class:`CliError`
    saying how to run the benchmarks when there is no clone (an installed wheel)."""
    module = _importable_suite()
    if module is not None:
        return module
    folder = find_benches(folders)
    if folder is None:
        looked = ", ".join(str(f) for f in (bench_folders() if folders is None else folders))
        raise CliError(
            "the benchmark suite is the benches/ package of a source checkout, not part of "
            f"the installed package, and none was found (looked in {looked}); {BENCH_HOW}"
        )
    root = str(folder.parent)
    if root not in sys.path:
        sys.path.insert(0, root)
    for name in [m for m in sys.modules if m == "benches" or m.startswith("benches.")]:
        del sys.modules[name]  # a failed or foreign import of the name must not shadow it
    importlib.invalidate_caches()
    return importlib.import_module(f"{folder.name}.run_all")


def run_bench(args: argparse.Namespace) -> int:
    """Runs the benchmark suite of a source clone (see :func:`load_bench_suite`)."""
    module = load_bench_suite()
    argv = (["--quick"] if args.quick else []) + (["--out", args.out] if args.out else [])
    for name in args.only or ():
        argv += ["--only", name]
    return int(module.main(argv) or 0)


# --------------------------------------------------------------------------- entry point


_EXAMPLES = "examples:\n"


def _examples(*lines: str) -> str:
    return _EXAMPLES + "\n".join(f"  {line}" for line in lines)


class _HelpFormatter(argparse.HelpFormatter):
    """Wraps descriptions to the terminal; keeps the examples of an epilog line by line."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if text.startswith(_EXAMPLES):
            return "".join(indent + line for line in text.splitlines(keepends=True))
        return super()._fill_text(text, width, indent)


def build_parser() -> argparse.ArgumentParser:
    """The ``vlm-collate`` parser: every subcommand has a description and examples,
    every flag a help line."""
    formatter = _HelpFormatter
    parser = argparse.ArgumentParser(
        prog="vlm-collate",
        description="See what a vision-language model will be trained on: collate "
        "chat-formatted multimodal examples and show each token with its label. Runs "
        "offline (the built-in processor is Qwen2.5-VL on the real Qwen2 vocabulary).",
        epilog=_examples(
            "vlm-collate demo                       the shipped sample data, start to end",
            "vlm-collate inspect data.jsonl         your examples, targets highlighted",
            "vlm-collate check --processor DIR      how labels are built for a template",
            "vlm-collate bench --quick              the benchmark suite (a source clone)",
            "vlm-collate verify --model DIR         packed and padded train the model alike",
            "vlm-collate COMMAND --help             a command's options",
        ),
        formatter_class=formatter,
    )
    parser.add_argument(
        "--traceback",
        action="store_true",
        help="on an error, show the full Python traceback instead of one line",
    )
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", title="commands"
    )
    color = argparse.ArgumentParser(add_help=False)
    color.add_argument(
        "--color",
        choices=("auto", "always", "never"),
        default="auto",
        help="colour the targets (default auto: on a terminal); without colour they are «marked»",
    )

    inspect = commands.add_parser(
        "inspect",
        parents=[color],
        help="print each sample's tokens with its training targets highlighted",
        description="Collate DATA (unshifted, so ids and labels align token by token) and "
        "print each sample's tokens with the targets highlighted, media placeholder runs "
        "collapsed, and a summary; optionally write the same view as an HTML page.",
        epilog=_examples(
            "vlm-collate inspect data.jsonl",
            "vlm-collate inspect data.jsonl --html view.html --limit 0",
            "vlm-collate inspect saved_dataset/ --processor my_processor/ \\",
            "    --max-length 2048 --on-overflow truncate",
        ),
        formatter_class=formatter,
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
    inspect.add_argument(
        "--max-length",
        type=int,
        metavar="N",
        help="longest sample allowed, in tokens (default: no limit)",
    )
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
    inspect.add_argument(
        "--html", metavar="OUT.html", help="also write the view as a self-contained HTML page"
    )
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
        epilog=_examples(
            "vlm-collate check",
            "vlm-collate check --processor my_processor/",
        ),
        formatter_class=formatter,
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
        description="Build the offline Qwen2.5-VL processor, collate the sample dataset "
        "shipped in the package with VLMCollator through a torch DataLoader with worker "
        "processes, report the speed and the first batch's shapes, say whether its labels "
        "are unshifted (Hugging Face style, the default) or pre-shifted (read from the "
        "batch itself), and show its tokens with the targets highlighted. The first run "
        "on a machine converts the Qwen2 vocabulary once (cached).",
        epilog=_examples(
            "vlm-collate demo",
            "vlm-collate demo --workers 0 --batch-size 2",
            "vlm-collate demo --shift        pre-shifted labels (the seed's contract)",
        ),
        formatter_class=formatter,
    )
    demo.add_argument(
        "--batch-size",
        type=int,
        default=DEMO_BATCH_SIZE,
        metavar="N",
        help=f"samples per batch (default {DEMO_BATCH_SIZE})",
    )
    demo.add_argument(
        "--workers",
        type=int,
        default=DEMO_WORKERS,
        metavar="N",
        help=f"DataLoader worker processes (default {DEMO_WORKERS}; 0 collates in this process)",
    )
    demo.add_argument(
        "--shift",
        action="store_true",
        help="collate pre-shifted batches (VLMCollator(processor, shift=True): labels[i] is "
        "the token after input_ids[i], plus shift_labels) instead of Hugging Face style "
        "unshifted labels",
    )
    demo.set_defaults(run=run_demo)

    bench = commands.add_parser(
        "bench",
        help="run the benchmark suite of a source clone (benches/run_all.py)",
        description="Run the benchmark suite, the benches/ package of a source clone "
        "(not part of the installed package): found in the current folder, else beside "
        "the package's python/ folder when it runs from a clone. Prints the tables and "
        "writes results.json, results.md and the scaling plot; a full run also rewrites "
        "the docs' tables. After a wheel install with no clone it says how to get one.",
        epilog=_examples(
            "vlm-collate bench --quick                 tiny sizes (about a minute)",
            "vlm-collate bench --only labels --out /tmp/bench",
            "make bench                                the full run, from the clone's root",
            "python -m benches.run_all --help          every option of the suite",
        ),
        formatter_class=formatter,
    )
    bench.add_argument(
        "--quick", action="store_true", help="tiny sizes and few repeats (a smoke run)"
    )
    bench.add_argument(
        "--out",
        metavar="DIR",
        help="write the results to DIR (default: bench-results/, or bench-results/quick/ "
        "with --quick)",
    )
    bench.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help="run only this benchmark (repeatable): labels, expand, end_to_end, dataloader, "
        "memory, packing, fast_path",
    )
    bench.set_defaults(run=run_bench)

    from .verify import add_parser as add_verify

    add_verify(commands, color, formatter, sys.modules[__name__])
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
