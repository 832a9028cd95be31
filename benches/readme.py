"""Writes generated text into the docs between their ``<!-- NAME:start -->`` and
``<!-- NAME:end -->`` markers, so the docs' tables are what the benchmark produced.

Each generated block lives in one docs file (:data:`BLOCKS`); the README only links to
them."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

BLOCKS = {
    "bench-results": "benchmarks.md",
    "fast-path": "fast_path.md",
    "families": "benchmarks.md",
    "formats": "benchmarks.md",
    "label-paths": "benchmarks.md",
    "scale": "packing.md",
}
"""Generated block name -> the file under ``docs/`` that holds it."""


def replaced_block(text: str, name: str, body: str) -> str:
    """``text`` with the lines between the ``name`` markers replaced by ``body``."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ValueError(f"the file needs exactly one {start} ... {end} block")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body.strip()}\n{end}{tail}"


def block_file(name: str, docs: Path = ROOT / "docs") -> Path:
    """The file of ``docs`` that holds the generated block ``name``."""
    if name not in BLOCKS:
        raise ValueError(f"unknown generated block {name!r}; known: {sorted(BLOCKS)}")
    return docs / BLOCKS[name]


def write_block(path: Path, name: str, body: str) -> Path:
    """Replaces the ``name`` block in place and returns the file written.

    ``path`` is the file that holds the block, or a folder of docs (the block goes to
    its file there, :func:`block_file`). A README without the block stands for the
    docs beside it (``README.md`` -> ``docs/<file>``), so callers written when the
    tables lived in the README keep working."""
    path = Path(path)
    if path.is_dir():
        path = block_file(name, path)
    elif f"<!-- {name}:start -->" not in path.read_text(encoding="utf-8") and (
        path.name == "README.md"
    ):
        path = block_file(name, path.parent / "docs")
    path.write_text(replaced_block(path.read_text(encoding="utf-8"), name, body), "utf-8")
    return path
