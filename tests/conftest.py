"""Shared fixtures: real processors built offline once per test session."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from vlm_collate import testing


@pytest.fixture(scope="session")
def qwen_processor():
    """A real Qwen2_5_VLProcessor on the real Qwen2 vocabulary."""
    return testing.qwen2_5_vl_processor()


@pytest.fixture(scope="session")
def qwen_tokenizer(qwen_processor):
    return qwen_processor.tokenizer


def make_image(width: int = 64, height: int = 48, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A small generated image."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB").convert(mode)


def image_item(width: int, height: int, seed: int = 0) -> dict:
    """An image content item holding a generated image."""
    return {"type": "image", "image": make_image(width, height, seed)}


def one_turn(*content, reply: str = "It is a test.") -> dict:
    """An example of one user turn (``content`` items) and one assistant reply."""
    return {
        "conversation": [
            {"role": "user", "content": list(content)},
            {"role": "assistant", "content": reply},
        ]
    }
