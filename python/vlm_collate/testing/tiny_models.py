"""Tiny Qwen2-VL / Qwen2.5-VL models (random weights, built from a config, no download) for
tests, benchmarks and a first training step.

``tiny_qwen_vl_config()`` gives the keyword arguments of ``Qwen2VLConfig`` /
``Qwen2_5_VLConfig``; with its defaults the model runs a forward pass (and a loss) on a
batch collated from the built-in Qwen2.5-VL processor. ``tiny_qwen_vl_model()`` builds
that model, ready to use::

    from vlm_collate import VLMCollator
    from vlm_collate.testing import qwen2_5_vl_processor
    from vlm_collate.testing.tiny_models import tiny_qwen_vl_model

    processor = qwen2_5_vl_processor()
    model = tiny_qwen_vl_model()
    batch = VLMCollator(processor)(examples)
    loss = model(**batch).loss
"""

from __future__ import annotations

from typing import Any

__all__ = ["QWEN2_VOCAB_SIZE", "mrope_section", "tiny_qwen_vl_config", "tiny_qwen_vl_model"]

QWEN2_VOCAB_SIZE = 151_700
"""Covers every id of the real Qwen2 vocabulary with its added tokens."""

NUM_ATTENTION_HEADS = 2


def mrope_section(head_dim: int) -> list[int]:
    """The multimodal rotary sections (temporal, height, width) for ``head_dim``.

    The sections split the rotary half of a head (``head_dim // 2`` frequencies), so they
    must sum to it; the ratio is the released models' (16, 24, 24 of 64): a quarter to
    time, the rest shared by height and width. ``mrope_section(128) == [16, 24, 24]``.
    """
    half = head_dim // 2
    if head_dim % 2 or half < 3:
        raise ValueError(f"head_dim {head_dim}: multimodal rotary needs an even head_dim >= 6")
    spatial = max(1, 3 * half // 8)
    return [half - 2 * spatial, spatial, spatial]


def tiny_qwen_vl_config(
    hidden_size: int = 16, num_hidden_layers: int = 1, vocab_size: int = QWEN2_VOCAB_SIZE
) -> dict[str, Any]:
    """Keyword arguments of ``Qwen2VLConfig`` / ``Qwen2_5_VLConfig`` for a tiny model: one
    vision block, two attention heads, multimodal rotary sections that fit the head size
    (``hidden_size // 2``; :func:`mrope_section`). Any even ``hidden_size`` of 12 or
    more runs; the defaults run a forward pass on a real collated batch."""
    if hidden_size % NUM_ATTENTION_HEADS:
        raise ValueError(
            f"hidden_size {hidden_size}: must be a multiple of the {NUM_ATTENTION_HEADS} "
            "attention heads"
        )
    head_dim = hidden_size // NUM_ATTENTION_HEADS
    return {
        "vision_config": {
            "depth": 1,
            "hidden_size": 16,
            "intermediate_size": 16,
            "num_heads": 2,
            "out_hidden_size": hidden_size,
        },
        "text_config": {
            "hidden_size": hidden_size,
            "intermediate_size": hidden_size,
            "num_hidden_layers": num_hidden_layers,
            "num_attention_heads": NUM_ATTENTION_HEADS,
            "num_key_value_heads": 1,
            "vocab_size": vocab_size,
            "rope_parameters": {"rope_type": "default", "mrope_section": mrope_section(head_dim)},
        },
    }


def tiny_qwen_vl_model(
    hidden_size: int = 16,
    num_hidden_layers: int = 1,
    vocab_size: int = QWEN2_VOCAB_SIZE,
    *,
    seed: int = 0,
) -> Any:
    """A ``Qwen2_5_VLForConditionalGeneration`` of :func:`tiny_qwen_vl_config`, random
    weights drawn from ``seed`` (the same model every call), in training mode. It takes
    a batch of ``VLMCollator(qwen2_5_vl_processor())`` as is: ``model(**batch).loss``."""
    import torch
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    config = Qwen2_5_VLConfig(**tiny_qwen_vl_config(hidden_size, num_hidden_layers, vocab_size))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config)
    return model.train()
