"""Writes generated text into README.md between its ``<!-- NAME:start -->`` and
``<!-- NAME:end -->`` markers, so the README's tables are what the benchmark produced."""

from __future__ import annotations

from pathlib import Path


def replaced_block(text: str, name: str, body: str) -> str:
    """``text`` with the lines between the ``name`` markers replaced by ``body``."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if text.count(start) != 1 or text.count(end) != 1 or text.index(start) > text.index(end):
        raise ValueError(f"README needs exactly one {start} ... {end} block")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body.strip()}\n{end}{tail}"


def write_block(readme: Path, name: str, body: str) -> None:
    """Replaces the ``name`` block of ``readme`` in place."""
    readme.write_text(replaced_block(readme.read_text(encoding="utf-8"), name, body), "utf-8")
