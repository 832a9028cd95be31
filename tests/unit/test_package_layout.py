"""The package's house rules, read from its source: folders along the data path, imports
only downward (or within a folder), no import cycle, and a runtime that imports nothing
from ``testing/``, ``tests/`` or ``benches/``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "python" / "vlm_collate"

LAYERS = [
    {"errors", "_engine", "engine", "options", "report", "reference"},
    {"formats"},
    {"processor"},
    {"pipeline"},
    {"families"},
    {"collator"},
    {"packing"},
    {"__init__"},
]
"""Runtime layers, lowest first: a module imports its own layer or lower ones."""
OUTSIDE = {"cli", "testing"}
"""Parts that may use the whole runtime (and, for the CLI, ``testing``)."""


def _module(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Every ``vlm_collate`` module ``path`` imports, at any depth (deferred ones too)."""
    module = _module(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "vlm_collate":
                continue
            for alias in node.names:  # `from . import engine` imports a module
                candidate = f"{target}.{alias.name}"
                found.add(candidate if _exists(candidate) else target)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "vlm_collate"}
    return {m for m in found if m != module}


def _exists(module: str) -> bool:
    relative = Path(*module.split(".")[1:])
    base = PACKAGE / relative
    return base.with_suffix(".py").exists() or (base / "__init__.py").exists()


def _part(module: str) -> str:
    """The top-level part of the package a module belongs to (``pipeline``, ``engine``...)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _rank(module: str) -> int | None:
    part = _part(module)
    return next((i for i, layer in enumerate(LAYERS) if part in layer), None)


GRAPH = {_module(p): _imports(p) for p in PACKAGE.rglob("*.py")}


def test_every_module_sits_in_a_known_part():
    unknown = sorted(m for m in GRAPH if _rank(m) is None and _part(m) not in OUTSIDE)
    assert not unknown, f"modules outside the layout: {unknown}"


def test_about_ten_modules_at_the_package_top():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= 10, top


@pytest.mark.parametrize("module", sorted(m for m in GRAPH if _rank(m) is not None))
def test_runtime_imports_only_downward(module):
    rank = _rank(module)
    upward = sorted(
        target
        for target in GRAPH[module]
        if _part(target) in OUTSIDE or (_rank(target) or 0) > rank  # type: ignore[operator]
    )
    assert not upward, f"{module} imports {upward} (a higher layer, testing/ or cli/)"


def test_no_import_cycle():
    visiting: list[str] = []
    done: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        if module in done:
            return
        if module in visiting:
            cycles.append([*visiting[visiting.index(module) :], module])
            return
        visiting.append(module)
        for target in sorted(GRAPH.get(module, ())):
            if target.startswith(module + "."):
                continue  # a package re-exporting its own modules is not a cycle
            visit(target)
        visiting.pop()
        done.add(module)

    for module in sorted(GRAPH):
        visit(module)
    assert not cycles, cycles


def test_runtime_reads_nothing_from_tests_or_benches():
    offenders = [
        str(p.relative_to(PACKAGE))
        for p in PACKAGE.rglob("*.py")
        if _part(_module(p)) not in OUTSIDE
        and any(
            word in p.read_text()
            for word in ("import benches", "from benches", "import tests", "from tests")
        )
    ]
    assert not offenders, offenders


def test_every_folder_says_what_it_holds():
    for folder in (p for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()):
        tree = ast.parse((folder / "__init__.py").read_text())
        assert ast.get_docstring(tree), f"{folder.name}/__init__.py has no module docstring"
