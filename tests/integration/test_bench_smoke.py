"""Smoke test of the benchmark suite: ``benches/run_all.py --quick`` produces every
table, the plot and the result files. Timings are never asserted."""

from __future__ import annotations

import importlib.util
import json

import pytest

from helpers import ROOT

TABLES = {
    "labels",
    "labels_speedup",
    "labels_scaling",
    "labels_templates",
    "expand",
    "end_to_end",
    "dataloader",
    "memory",
    "packing",
    "packing_time",
    "packing_same",
    "packing_rope",
    "fast_path",
    "fast_path_memory",
    "fast_path_dataloader",
    "fast_path_families",
    "families",
    "families_labels",
    "families_video",
    "families_dataloader",
    "families_memory",
    "scale_sampler",
    "scale_streaming",
    "formats",
    "label_paths_families",
    "label_paths_turns",
}


def _run_all():
    """``benches/run_all.py`` loaded from its file, as the ``vlm-collate bench`` command may."""
    spec = importlib.util.spec_from_file_location(
        "bench_run_all_smoke", ROOT / "benches" / "run_all.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_quick_bench_produces_every_table(tmp_path, qwen_processor):
    # qwen_processor: the session's processor, so the vocabulary is converted only once.
    # A docs folder as the repository's: each generated block in its own page.
    docs = tmp_path / "docs"
    docs.mkdir()
    pages = {"bench-results": docs / "benchmarks.md", "fast-path": docs / "fast_path.md"}
    for name, page in pages.items():
        page.write_text(f"# t\n<!-- {name}:start -->\nSTALE-TABLE\n<!-- {name}:end -->\nafter\n")
    assert _run_all().main(["--quick", "--out", str(tmp_path), "--docs", str(docs)]) == 0

    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["tables"]) == TABLES
    for name, table in results["tables"].items():
        assert table["rows"], f"table {name} is empty"
        assert all(len(row) == len(table["columns"]) for row in table["rows"]), name
    markdown = (tmp_path / "results.md").read_text()
    for table in results["tables"].values():
        assert table["title"] in markdown
    assert results["targets"], "no target verdicts"
    for name, page in pages.items():
        written = page.read_text()
        assert "STALE-TABLE" not in written and written.endswith(f"<!-- {name}:end -->\nafter\n")
        assert results["machine"]["date"] in written
    # The benchmarks page's block is exactly the run's tables; the fast path page shows its own.
    assert markdown.strip() in pages["bench-results"].read_text()
    fast_path = pages["fast-path"].read_text()
    assert results["tables"]["fast_path"]["title"] in fast_path
    assert results["tables"]["labels"]["title"] not in fast_path
    assert (tmp_path / "bench_scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Every method computes the same batch (a correctness check, not a timing).
    for cell in results["tables"]["labels"]["raw"]:
        assert all(cell["agree"].values()), cell["agree"]
    for cell in results["tables"]["expand"]["raw"]:
        assert all(cell["agree"].values()), cell["agree"]
    for case in results["tables"]["end_to_end"]["raw"]:
        assert case["labels_agree_with_seed_style"]


def _readme_blocks():
    spec = importlib.util.spec_from_file_location(
        "bench_readme_blocks", ROOT / "benches" / "readme.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_each_generated_block_lives_in_its_docs_page():
    blocks = _readme_blocks()
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in blocks.BLOCKS:
        start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
        page = blocks.block_file(name, ROOT / "docs").read_text(encoding="utf-8")
        assert page.count(start) == 1 and page.count(end) == 1, name
        assert start not in readme, f"the README holds the generated block {name}"


def test_a_readme_path_writes_the_docs_page(tmp_path):
    # Callers that still name README.md (python -m benches.fast_path) write the docs page.
    blocks = _readme_blocks()
    (tmp_path / "README.md").write_text("# front door\n")
    (tmp_path / "docs").mkdir()
    page = tmp_path / "docs" / "fast_path.md"
    page.write_text("x\n<!-- fast-path:start -->\nold\n<!-- fast-path:end -->\ny\n")
    assert blocks.write_block(tmp_path / "README.md", "fast-path", "new") == page
    assert page.read_text() == "x\n<!-- fast-path:start -->\nnew\n<!-- fast-path:end -->\ny\n"
    assert (tmp_path / "README.md").read_text() == "# front door\n"
