"""Smoke test of the benchmark suite: ``benches/run_all.py --quick`` produces every
table, the plot and the result files. Timings are never asserted."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
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
    "packing_rope",
    "fast_path",
    "fast_path_memory",
    "fast_path_dataloader",
}


def _run_all():
    """``benches/run_all.py`` loaded from its file, as the ``vlm-collate bench`` command may."""
    spec = importlib.util.spec_from_file_location(
        "bench_run_all_smoke", ROOT / "benches" / "run_all.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_quick_bench_produces_every_table(tmp_path, qwen_processor):
    # qwen_processor: the session's processor, so the vocabulary is converted only once.
    readme = tmp_path / "README.md"
    block = "<!-- bench-results:start -->\nSTALE-TABLE\n<!-- bench-results:end -->"
    readme.write_text(f"# t\n{block}\nafter\n")
    assert _run_all().main(["--quick", "--out", str(tmp_path), "--readme", str(readme)]) == 0

    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results["tables"]) == TABLES
    for name, table in results["tables"].items():
        assert table["rows"], f"table {name} is empty"
        assert all(len(row) == len(table["columns"]) for row in table["rows"]), name
    markdown = (tmp_path / "results.md").read_text()
    for table in results["tables"].values():
        assert table["title"] in markdown
    assert results["targets"], "no target verdicts"
    written = readme.read_text()
    assert "STALE-TABLE" not in written and written.endswith("<!-- bench-results:end -->\nafter\n")
    assert markdown.strip() in written  # the README block is exactly the run's tables
    assert results["machine"]["date"] in written
    assert (tmp_path / "bench_scaling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Every method computes the same batch (a correctness check, not a timing).
    for cell in results["tables"]["labels"]["raw"]:
        assert all(cell["agree"].values()), cell["agree"]
    for cell in results["tables"]["expand"]["raw"]:
        assert all(cell["agree"].values()), cell["agree"]
    for case in results["tables"]["end_to_end"]["raw"]:
        assert case["labels_agree_with_seed_style"]
