"""Config values of tiny Qwen2-VL / Qwen2.5-VL models (random weights, built from a config,
no download) for tests and benchmarks of rotary positions and packing."""

from __future__ import annotations

from typing import Any

QWEN2_VOCAB_SIZE = 151_700
"""Covers every id of the real Qwen2 vocabulary with its added tokens."""


def tiny_qwen_vl_config(
    hidden_size: int = 16, num_hidden_layers: int = 1, vocab_size: int = QWEN2_VOCAB_SIZE
) -> dict[str, Any]:
    """Keyword arguments of ``Qwen2VLConfig`` / ``Qwen2_5_VLConfig`` for a tiny model: one
    vision block, two attention heads, the default multimodal rotary sections."""
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
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "vocab_size": vocab_size,
            "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3]},
        },
    }
