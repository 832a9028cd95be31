"""The README's packing recipes train: a loop over packed batches and a Trainer with the
packed collator each move a tiny Qwen2.5-VL's weights."""

from __future__ import annotations

import pytest
import torch

from helpers import run_example, tiny_qwen2_5_vl, trl_rows

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", ["packed-loop", "packed-trainer"])
def test_readme_packing_examples_train(qwen_processor, name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = tiny_qwen2_5_vl(qwen_processor)
    before = [p.detach().clone() for p in model.parameters()]
    names = run_example(name, model=model, processor=qwen_processor, dataset=trl_rows(8))
    changed = any(not torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert changed, "no parameter moved"
    if name == "packed-loop":
        assert torch.isfinite(names["loss"])
        assert names["batch"]["position_ids"].shape[0] == 4
    else:
        assert names["trainer"].state.global_step == 1
