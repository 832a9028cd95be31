"""What every benchmark shares: settings, timing, result tables, the machine."""

from __future__ import annotations

import gc
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Settings:
    """Sizes and repeat budgets of a run (``quick`` for smoke tests and CI)."""

    quick: bool = False

    @property
    def batch(self) -> int:
        return 8

    @property
    def lengths(self) -> tuple[int, ...]:
        return (256, 512) if self.quick else (1024, 2048, 4096, 8192, 16384)

    @property
    def table_lengths(self) -> tuple[int, ...]:
        """Lengths the issue names (the others only add points to the plot)."""
        return (256, 512) if self.quick else (1024, 4096, 16384)

    @property
    def turns(self) -> tuple[int, ...]:
        return (1, 4) if self.quick else (1, 4, 16)

    @property
    def budget_s(self) -> float:
        """Time spent repeating one measurement (after its warm-up run)."""
        return 0.05 if self.quick else 1.5

    @property
    def max_repeats(self) -> int:
        return 3 if self.quick else 31

    @property
    def min_repeats(self) -> int:
        return 1 if self.quick else 5

    @property
    def slow_repeats(self) -> int:
        """Repeats of a measurement whose single run exceeds the budget."""
        return 1 if self.quick else 3

    @property
    def skip_after_s(self) -> float:
        """A method slower than this at some length is skipped at longer ones."""
        return 5.0 if self.quick else 30.0


@dataclass
class Timing:
    median_s: float
    runs: int

    def as_dict(self) -> dict[str, Any]:
        return {"median_s": self.median_s, "runs": self.runs}


def measure(fn: Callable[[], Any], settings: Settings) -> Timing:
    """Median wall time of ``fn()`` after one warm-up run; as many repeats as fit
    in the budget (between the minimum and the maximum), fewer for slow calls."""
    gc.collect()
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    if first * settings.min_repeats > settings.budget_s:
        repeats = settings.slow_repeats
    else:
        repeats = int(settings.budget_s / max(first, 1e-9))
        repeats = max(settings.min_repeats, min(settings.max_repeats, repeats))
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return Timing(statistics.median(samples), len(samples))


def fmt_time(seconds: float | None) -> str:
    if seconds is None:
        return "skipped"
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1.0:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def fmt_ratio(value: float | None) -> str:
    if value is None:
        return "n/a"
    return f"{value:.0f}×" if value >= 100 else f"{value:.2f}×" if value < 10 else f"{value:.1f}×"


def fmt_mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:.2f} MiB"


@dataclass
class Table:
    """One result table: display cells, raw numbers for results.json, and notes."""

    name: str
    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    raw: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = [f"**{self.title}**", ""]
        lines.append("| " + " | ".join(self.columns) + " |")
        lines.append("|" + "|".join("---" for _ in self.columns) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        if self.notes:
            lines.append("")
            lines += [f"- {note}" for note in self.notes]
        return "\n".join(lines) + "\n"

    def as_dict(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "columns": self.columns,
            "rows": self.rows,
            "raw": self.raw,
            "notes": self.notes,
        }


@dataclass
class Target:
    """A target of the issue and whether this run met it."""

    name: str
    goal: str
    measured: str
    met: bool | None

    def as_dict(self) -> dict[str, Any]:
        return {"target": self.name, "goal": self.goal, "measured": self.measured, "met": self.met}


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> dict[str, Any]:
    import numpy
    import torch
    import transformers

    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": numpy.__version__,
        "torch_threads": torch.get_num_threads(),
    }


@dataclass
class Context:
    """What a benchmark gets: settings, the real processor, and a progress hook."""

    settings: Settings
    processor: Any
    advance: Callable[[str], None] = lambda description: None
    targets: list[Target] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tokenizer(self) -> Any:
        return self.processor.tokenizer
