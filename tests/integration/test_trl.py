"""TRL's SFTTrainer on a tiny Qwen2.5-VL with TRL's own vision format (``messages``
with ``{"type": "image"}`` placeholders and an ``images`` column), the collator as
``data_collator``, through the README's recipe."""

from __future__ import annotations

import math

import pytest

from helpers import run_example, tiny_qwen2_5_vl, trl_rows
from vlm_collate import VLMCollator

pytestmark = pytest.mark.slow

datasets = pytest.importorskip("datasets", reason="TRL trains on a datasets.Dataset")
trl = pytest.importorskip("trl", reason="the TRL recipe needs trl")


def test_readme_trl_recipe_trains_three_steps_in_each_style(qwen_processor, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dataset = datasets.Dataset.from_list(trl_rows(6))
    names = run_example(
        "trl", model=tiny_qwen2_5_vl(qwen_processor), processor=qwen_processor, dataset=dataset
    )
    trainer = names["trainer"]
    assert isinstance(trainer, trl.SFTTrainer) and trainer.state.global_step == 3
    # TRL kept our collator (it builds its own only when none is given).
    assert isinstance(trainer.data_collator, VLMCollator)
    hf_loss = trainer.state.log_history[-1]["train_loss"]
    assert math.isfinite(hf_loss) and hf_loss > 0

    # Pre-shifted batches carry shift_labels, which TRL's loss uses without shifting
    # again: the same run gives the same loss.
    seed_style = trl.SFTTrainer(
        model=tiny_qwen2_5_vl(qwen_processor),
        args=names["args"],
        train_dataset=dataset,
        processing_class=qwen_processor,
        data_collator=VLMCollator(qwen_processor, shift=True),
    )
    seed_style.train()
    assert seed_style.state.global_step == 3
    assert math.isclose(seed_style.state.log_history[-1]["train_loss"], hf_loss, rel_tol=1e-4)
