"""The Hugging Face Trainer on a tiny Qwen2.5-VL (random weights, from a config) with a
`datasets` dataset whose images are not decoded, through the README's recipe; and the
shift contract checked with a perfect next-token predictor in both label styles."""

from __future__ import annotations

import math

import pytest
import torch

from helpers import run_example, tiny_qwen2_5_vl, trl_rows
from vlm_collate import VLMCollator, qwen2_5_collate_fn

pytestmark = pytest.mark.slow

datasets = pytest.importorskip("datasets", reason="the Trainer test reads a datasets.Dataset")


@pytest.fixture(scope="module")
def dataset():
    data = datasets.Dataset.from_list(trl_rows(6))
    # Without explicit features, datasets keeps image dicts undecoded.
    first = data[0]["images"][0]
    assert isinstance(first, dict) and isinstance(first["bytes"], bytes)
    return data


def _perfect_logits(next_tokens: torch.Tensor, vocab: int) -> torch.Tensor:
    """Logits that put all mass on ``next_tokens`` (position i predicts next_tokens[i])."""
    logits = torch.full((*next_tokens.shape, vocab), -50.0)
    logits.scatter_(-1, next_tokens.unsqueeze(-1).clamp(min=0), 50.0)
    return logits


def _loss_with_logits(model, batch, logits: torch.Tensor) -> float:
    """``model(**batch).loss`` with the LM head's output replaced by ``logits``: the
    model's own loss path (labels, ``shift_labels``) scores a chosen predictor."""

    def replace(module, inputs, output):
        return logits[:, : output.shape[1]].to(output.dtype).contiguous()

    handle = model.lm_head.register_forward_hook(replace)
    try:
        with torch.no_grad():
            return float(model(**batch).loss)
    finally:
        handle.remove()


def test_perfect_predictor_loss_is_zero_in_both_styles(qwen_processor, dataset):
    model = tiny_qwen2_5_vl(qwen_processor)
    rows = [dataset[i] for i in range(4)]
    hf = VLMCollator(qwen_processor)(rows)
    seed = qwen2_5_collate_fn(rows, qwen_processor)
    # The true next token comes from the unshifted input ids, never from the labels.
    full = hf["input_ids"]
    vocab = model.config.text_config.vocab_size
    perfect = _perfect_logits(torch.cat([full[:, 1:], full[:, -1:]], dim=1), vocab)
    assert "shift_labels" not in hf and torch.equal(seed["shift_labels"], seed["labels"])
    assert _loss_with_logits(model, hf, perfect) < 1e-4
    assert _loss_with_logits(model, seed, perfect) < 1e-4
    # Without shift_labels the model would shift pre-shifted labels again.
    shifted_twice = {k: v for k, v in seed.items() if k != "shift_labels"}
    assert _loss_with_logits(model, shifted_twice, perfect) > 10
    # A random model's loss is the same on both styles (the same targets at the same places).
    with torch.no_grad():
        assert math.isclose(float(model(**hf).loss), float(model(**seed).loss), rel_tol=1e-5)


def test_readme_trainer_recipe_trains_three_steps_in_each_style(
    qwen_processor, dataset, tmp_path, monkeypatch
):
    from transformers import Trainer

    monkeypatch.chdir(tmp_path)
    names = run_example(
        "trainer", model=tiny_qwen2_5_vl(qwen_processor), processor=qwen_processor, dataset=dataset
    )
    trainer = names["trainer"]
    assert trainer.state.global_step == 3
    assert trainer.args.dataloader_num_workers == 2
    hf_loss = trainer.state.log_history[-1]["train_loss"]
    assert math.isfinite(hf_loss) and hf_loss > 0

    # The same run on pre-shifted batches: the Trainer and the model read shift_labels,
    # so the training loss is the same.
    seed_style = Trainer(
        model=tiny_qwen2_5_vl(qwen_processor),
        args=names["args"],
        train_dataset=dataset,
        data_collator=VLMCollator(qwen_processor, shift=True),
    )
    seed_style.train()
    assert seed_style.state.global_step == 3
    assert math.isclose(seed_style.state.log_history[-1]["train_loss"], hf_loss, rel_tol=1e-4)
