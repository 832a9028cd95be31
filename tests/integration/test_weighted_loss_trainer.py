"""The docs' weighted-loss Trainer recipe (docs/labels.md) on a tiny Qwen2.5-VL: the
Trainer trains on batches carrying ``loss_weights``, and the recipe's loss equals the
model's own loss when every weight is 1 and doubles when every weight is 2."""

from __future__ import annotations

import math

import pytest
import torch

from helpers import EXAMPLE, ROOT, tiny_qwen2_5_vl
from vlm_collate import VLMCollator, weighted_loss

pytestmark = pytest.mark.slow


def _rows(weight):
    return [
        {
            "messages": [
                {"role": "user", "content": f"Say {i}."},
                {"role": "assistant", "content": f"It is {i}.", "weight": weight},
            ]
        }
        for i in range(4)
    ]


def _recipe():
    """The ``WeightedTrainer`` of docs/labels.md, executed from the docs themselves."""
    text = (ROOT / "docs" / "labels.md").read_text(encoding="utf-8")
    found = {m["name"]: m["code"] for m in EXAMPLE.finditer(text)}
    namespace: dict = {"__name__": "docs_weighted_trainer"}
    exec(compile(found["weighted-trainer"], "docs/labels.md:weighted-trainer", "exec"), namespace)
    return namespace["WeightedTrainer"]


@pytest.mark.parametrize("shift", [False, True])
def test_weighted_loss_matches_the_model_loss(qwen_processor, shift):
    model = tiny_qwen2_5_vl(qwen_processor)
    ones = VLMCollator(qwen_processor, shift=shift)(_rows(1.0))
    twos = VLMCollator(qwen_processor, shift=shift)(_rows(2.0))
    assert "loss_weights" in ones and torch.equal(ones["labels"], twos["labels"])
    inputs = {k: v for k, v in ones.items() if k not in ("labels", "shift_labels", "loss_weights")}
    with torch.no_grad():
        logits = model(**inputs).logits
        own = float(model(**{k: v for k, v in ones.items() if k != "loss_weights"}).loss)
    assert math.isclose(float(weighted_loss(logits, ones)), own, rel_tol=1e-4)
    assert math.isclose(float(weighted_loss(logits, twos)), 2 * own, rel_tol=1e-4)


def test_trainer_recipe_trains(qwen_processor, tmp_path):
    from transformers import TrainingArguments

    args = TrainingArguments(
        output_dir=str(tmp_path),
        per_device_train_batch_size=2,
        max_steps=2,
        remove_unused_columns=False,
        report_to=[],
        logging_steps=1,
        use_cpu=True,
    )
    trainer = _recipe()(
        model=tiny_qwen2_5_vl(qwen_processor).train(),
        args=args,
        train_dataset=_rows(0.5),
        data_collator=VLMCollator(qwen_processor),
    )
    trainer.train()
    assert trainer.state.global_step == 2
    loss = trainer.state.log_history[-1]["train_loss"]
    assert math.isfinite(loss) and loss > 0
