"""The README's python code runs, as written (the docs test of Hugging Face tokenizers,
done with the README's own markers).

Convention: every python block in README.md is preceded by ``<!-- example: NAME -->``
(it runs on its own) or ``<!-- example: NAME needs=model,processor,dataset -->`` (it
runs with those names bound to a tiny Qwen2.5-VL from a config, the offline
``Qwen2_5_VLProcessor`` and a few rows). Blocks that train are run by the integration
test that owns them, which also checks their results."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tiny_vlm import readme_examples, run_example, tiny_qwen2_5_vl, trl_rows

OWNERS = {
    "trainer": "test_integration_trainer.py",
    "trl": "test_integration_trl.py",
}
"""Examples run by another test file (they train, and that file checks the training)."""


def test_every_python_block_is_marked_and_run_somewhere():
    examples = readme_examples()  # raises on a python block without a marker
    assert {"five-lines", "trainer", "trl"} <= set(examples)
    here = Path(__file__).resolve().parent
    for name, test_file in OWNERS.items():
        source = (here / test_file).read_text()
        assert "run_example(" in source and f'"{name}"' in source, (
            f"{test_file} does not run the README example {name!r}"
        )


@pytest.mark.parametrize(
    "name", [n for n, (_, needs) in readme_examples().items() if not needs and n not in OWNERS]
)
def test_standalone_examples_run(name, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
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
