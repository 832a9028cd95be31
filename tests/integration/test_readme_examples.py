"""The python code of the README and of ``docs/*.md`` runs, as written (the docs test of
Hugging Face tokenizers, done with the docs' own markers).

Convention: every python block in README.md and in docs/*.md is preceded by
``<!-- example: NAME -->`` (it runs on its own) or
``<!-- example: NAME needs=model,processor,dataset -->`` (it runs with those names bound
to a tiny Qwen2.5-VL from a config, the offline ``Qwen2_5_VLProcessor`` and a few rows;
README only, where ``helpers.run_example`` finds it). Blocks that train are run by the
test that owns them, which also checks their results."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from helpers import (
    EXAMPLE,
    PYTHON_BLOCK,
    ROOT,
    readme_examples,
    run_example,
    tiny_qwen2_5_vl,
    trl_rows,
)


def docs_examples() -> dict[str, tuple[Path, str, tuple[str, ...]]]:
    """The python blocks of ``docs/*.md`` by name: ``{name: (file, code, names it needs)}``;
    raises on a block without a marker or a name used twice (README included)."""
    found: dict[str, tuple[Path, str, tuple[str, ...]]] = {}
    taken = set(readme_examples())
    for path in sorted((ROOT / "docs").glob("*.md")):
        text = path.read_text(encoding="utf-8")
        marked = list(EXAMPLE.finditer(text))
        blocks = PYTHON_BLOCK.findall(text)
        if len(blocks) != len(marked):
            named = {m["code"] for m in marked}
            loose = [b.splitlines()[0] for b in blocks if b not in named]
            raise AssertionError(f"{path.name}: python blocks without an example marker: {loose}")
        for m in marked:
            name = m["name"]
            if name in taken:
                raise AssertionError(f"{path.name}: example name {name!r} is used twice")
            taken.add(name)
            found[name] = (path, m["code"], tuple(filter(None, (m["needs"] or "").split(","))))
    return found


def _test_files() -> list[Path]:
    return sorted((ROOT / "tests").rglob("test_*.py"))


OWNERS = {
    "trainer": "integration/test_trainer.py",
    "trl": "integration/test_trl.py",
}
"""Examples run by another test file (they train, and that file checks the training)."""


def test_every_python_block_is_marked_and_run_somewhere():
    examples = readme_examples()  # raises on a python block without a marker
    assert {"five-lines", "trainer", "trl"} <= set(examples)
    sources = [p.read_text() for p in _test_files() if p.name != Path(__file__).name]
    for name, test_file in OWNERS.items():
        # The owner may have moved into a subfolder of tests/ (or been renamed).
        assert any("run_example(" in src and f'"{name}"' in src for src in sources), (
            f"no test under tests/ (expected {test_file}) runs the README example {name!r}"
        )
    # Examples with bound names run through helpers.run_example, which reads the README.
    for name, (path, _, needs) in docs_examples().items():
        assert not needs, f"{path.name}: example {name!r} needs {needs}: keep it in README.md"


def test_docs_hold_runnable_examples():
    assert "options" in docs_examples()  # the CollateOptions example of docs/options.md


STANDALONE = sorted(
    [n for n, (_, needs) in readme_examples().items() if not needs and n not in OWNERS]
    + list(docs_examples())
)
"""Examples that run on their own: the README's and every one of docs/*.md."""


@pytest.mark.parametrize("name", STANDALONE)
def test_standalone_examples_run(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    docs = docs_examples()
    if name in docs:
        path, code, _ = docs[name]
        source = f"{path.relative_to(ROOT)}:{name}"
        exec(compile(code, source, "exec"), {"__name__": f"docs_{name}"})
    else:
        run_example(name)
    if name == "options":
        assert "pass max_length=128" in capsys.readouterr().out


def test_five_lines_give_hugging_face_batches(qwen_processor):
    model = tiny_qwen2_5_vl(qwen_processor)
    names = run_example("five-lines", model=model, processor=qwen_processor, dataset=trl_rows(8))
    batch, loss = names["batch"], names["loss"]
    assert batch["input_ids"].shape[0] == 8 and "pixel_values" in batch
    # Unshifted labels: each target sits on its own token, ready for the model's shift.
    targets = batch["labels"] != -100
    assert torch.equal(batch["labels"][targets], batch["input_ids"][targets])
    assert "shift_labels" not in batch and torch.isfinite(loss)
