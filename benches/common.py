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
    def rounds(self) -> int:
        """Rounds over which compared methods' repeats are interleaved."""
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


@dataclass
class Pair:
    """Two methods timed in back-to-back pairs: each one's median and, per pair, the
    second's time over the first's (:func:`paired`)."""

    first_s: float
    second_s: float
    ratios: list[float]

    @property
    def second_over_first(self) -> float:
        """Median over the pairs of second / first."""
        return statistics.median(self.ratios)

    @property
    def first_over_second(self) -> float:
        """Median over the pairs of first / second."""
        return statistics.median(1 / r for r in self.ratios)

    def as_dict(self) -> dict[str, Any]:
        return {"first_s": self.first_s, "second_s": self.second_s, "ratios": self.ratios}


def paired(
    first: Callable[[], Any],
    second: Callable[[], Any],
    settings: Settings,
    repeats: int | None = None,
) -> Pair:
    """``first`` and ``second`` timed in pairs of calls made back to back, the order
    alternating pair by pair, after one warm-up call each. A drift in the machine's speed
    (a shared host) hits both calls of a pair alike, so the median of the pairs' ratios
    is steadier than a ratio of medians taken at different moments. Pairs: ``repeats``,
    else as many as fit in twice the budget, between 5 and 41 (quick: 1 to 4)."""
    gc.collect()
    t0 = time.perf_counter()
    first(), second()
    once = time.perf_counter() - t0
    if repeats is None:
        low, high = (1, 4) if settings.quick else (5, 41)
        repeats = max(low, min(high, int(2 * settings.budget_s / max(once, 1e-9))))
    a: list[float] = []
    b: list[float] = []
    for k in range(repeats):
        for fn, times in ((first, a), (second, b)) if k % 2 == 0 else ((second, b), (first, a)):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return Pair(statistics.median(a), statistics.median(b), [y / x for x, y in zip(a, b)])


def measure_all(fns: dict[str, Callable[[], Any]], settings: Settings) -> dict[str, Timing]:
    """Median wall time of each of several methods compared with each other.

    After one warm-up call each, the repeats are spread over a few rounds; in each
    round every method runs a short burst (one untimed call first when the burst has
    several, so its inputs are in cache as they are in a collate call). A change in
    the machine's load during the measurement so hits every method alike. Repeats:
    as many as fit in the budget (between the minimum and the maximum); a method
    slower than the budget gets only a few.
    """
    gc.collect()
    first: dict[str, float] = {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        fn()
        first[name] = time.perf_counter() - t0
    wanted = {}
    for name, seconds in first.items():
        if seconds * settings.min_repeats > settings.budget_s:
            wanted[name] = settings.slow_repeats
        else:
            repeats = int(settings.budget_s / max(seconds, 1e-9))
            wanted[name] = max(settings.min_repeats, min(settings.max_repeats, repeats))
    samples: dict[str, list[float]] = {name: [] for name in fns}
    rounds = settings.rounds
    for _ in range(rounds):
        for name, fn in fns.items():
            burst = min(-(-wanted[name] // rounds), wanted[name] - len(samples[name]))
            if burst <= 0:
                continue
            if burst > 1:
                fn()
            for _ in range(burst):
                t0 = time.perf_counter()
                fn()
                samples[name].append(time.perf_counter() - t0)
    return {n: Timing(statistics.median(v), len(v)) for n, v in samples.items()}


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
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": numpy.__version__,
        "torch_threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
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
