"""The log-log scaling plot of label-building time against sequence length."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .labels import METHODS

_STYLE = {
    "engine markers": ("tab:red", "o", "-"),
    "engine contents": ("tab:red", "s", "--"),
    "engine search only": ("tab:orange", "D", ":"),
    "reference markers": ("tab:gray", "o", "-"),
    "reference contents": ("tab:gray", "s", "--"),
    "seed-style": ("tab:purple", "^", "-"),
    "torch markers": ("tab:blue", "o", "-"),
    "torch contents": ("tab:blue", "s", "--"),
}


def scaling_plot(results: list[dict[str, Any]], path: Path, title: str) -> Path:
    """One panel per number of turns: median time per batch against L, one line per method,
    with a dotted line proportional to L through engine markers' longest point."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    turns = sorted({c["turns"] for c in results})
    fig, axes = plt.subplots(1, len(turns), figsize=(5.0 * len(turns), 5.0), sharey=True)
    axes = [axes] if len(turns) == 1 else list(axes)
    for ax, n in zip(axes, turns):
        cells = sorted((c for c in results if c["turns"] == n), key=lambda c: c["length"])
        for name in METHODS:
            points = [(c["length"], c["times"][name]) for c in cells if c["times"].get(name)]
            if not points:
                continue
            color, marker, line = _STYLE[name]
            xs, ys = zip(*points)
            ax.plot(xs, ys, color=color, marker=marker, linestyle=line, label=name)
        engine = [(c["length"], c["times"]["engine markers"]) for c in cells]
        if engine:
            x1, y1 = engine[-1]
            xs = [c["length"] for c in cells]
            ax.plot(xs, [y1 * x / x1 for x in xs], "k:", linewidth=1, label="∝ L (linear)")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        lengths = [c["length"] for c in cells]
        ax.set_xticks(lengths, [f"{n // 1024}k" if n >= 1024 else str(n) for n in lengths])
        ax.minorticks_off()
        ax.set_yscale("log")
        ax.set_title(f"{n} assistant turn{'s' if n > 1 else ''} per sample")
        ax.set_xlabel("sequence length L (tokens per sample)")
        ax.grid(True, which="major", alpha=0.3)
    axes[0].set_ylabel("median time per batch of 8 (s)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=9, frameon=False)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
