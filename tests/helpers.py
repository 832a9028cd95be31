"""Builders shared by the tests, each written once: generated images and PNG bytes,
messages and one-turn examples, a tiny Qwen2.5-VL from a config (random weights,
offline), TRL-style rows, and the README's python examples.

Imported as ``from helpers import ...``: ``tests/conftest.py`` puts ``tests/`` on
``sys.path`` (and ``torchrun`` workers get it through ``PYTHONPATH``)."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

TESTS = Path(__file__).resolve().parent
"""The ``tests/`` folder."""
ROOT = TESTS.parent
"""The clone's root: README.md, docs/, benches/, tests/."""
README = ROOT / "README.md"

IGNORE = -100
"""The label of a position that is not a target."""


# --------------------------------------------------------------------------- media


def make_image(width: int = 64, height: int = 48, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A small generated image (random pixels from ``seed``), converted to ``mode``."""
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB").convert(mode)


def image_item(width: int = 64, height: int = 48, seed: int = 0) -> dict[str, Any]:
    """An image content item holding a generated image."""
    return {"type": "image", "image": make_image(width, height, seed)}


def png_bytes(image: Image.Image) -> bytes:
    """``image`` encoded as a PNG file."""
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


# --------------------------------------------------------------------------- messages


def _item(x: Any) -> Any:
    return {"type": "text", "text": x} if isinstance(x, str) else x


def user(*items: Any) -> dict[str, Any]:
    """A user message; strings become text items."""
    return {"role": "user", "content": [_item(x) for x in items]}


def assistant(content: str | list[str]) -> dict[str, Any]:
    """An assistant message: a string, or a list of text parts."""
    if isinstance(content, str):
        return {"role": "assistant", "content": content}
    return {"role": "assistant", "content": [{"type": "text", "text": t} for t in content]}


def one_turn(*content: Any, reply: str = "It is a test.", images: Any = ()) -> dict[str, Any]:
    """An example of one user turn and one assistant reply (a string). The user turn
    holds an image item per value of ``images``, then ``content`` (strings become text
    items)."""
    items = [{"type": "image", "image": value} for value in images] + [_item(x) for x in content]
    return {
        "conversation": [
            {"role": "user", "content": items},
            {"role": "assistant", "content": reply},
        ]
    }


# --------------------------------------------------------------------------- tiny model


def tiny_qwen2_5_vl(processor: Any, seed: int = 0) -> Any:
    """A Qwen2.5-VL with random weights and tiny layers, whose vocabulary covers every
    id of ``processor``'s tokenizer (the real Qwen2 vocabulary): about 2.5M parameters,
    almost all in the tied embedding."""
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    tokenizer = processor.tokenizer
    config = Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_hidden_layers": 1,
            "num_attention_heads": 2,
            "num_key_value_heads": 1,
            "max_position_embeddings": 2048,
            "rope_scaling": {"type": "mrope", "mrope_section": [1, 1, 2]},
            "tie_word_embeddings": True,
        },
        vision_config={
            "depth": 1,
            "hidden_size": 16,
            "intermediate_size": 32,
            "num_heads": 2,
            "out_hidden_size": 16,
            "fullatt_block_indexes": [0],
        },
        image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
        video_token_id=tokenizer.convert_tokens_to_ids("<|video_pad|>"),
        vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"),
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return Qwen2_5_VLForConditionalGeneration(config).eval()


def trl_rows(n: int) -> list[dict[str, Any]]:
    """``n`` rows in TRL's vision format: ``messages`` with ``{"type": "image"}``
    placeholders and an ``images`` column of undecoded ``{"bytes", "path"}`` dicts
    (what ``datasets`` stores); every third row is text only. Row i's reply names i."""
    rows = []
    for i in range(n):
        with_image = i % 3 != 2
        question = [{"type": "text", "text": f"What is shown in picture {i}?"}]
        if with_image:
            question.insert(0, {"type": "image"})
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": question},
                    {"role": "assistant", "content": [{"type": "text", "text": f"Picture {i}."}]},
                ],
                "images": [{"bytes": png_bytes(make_image(32, 32, i)), "path": None}]
                if with_image
                else [],
            }
        )
    return rows


# --------------------------------------------------------------------------- README examples

EXAMPLE = re.compile(
    r"<!-- example: (?P<name>[\w-]+)(?: needs=(?P<needs>[\w,]+))? -->\s*\n"
    r"```python\n(?P<code>.*?)```",
    re.S,
)
"""A python block with its marker: ``<!-- example: NAME [needs=a,b] -->``."""
PYTHON_BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def readme_examples() -> dict[str, tuple[str, tuple[str, ...]]]:
    """The README's python blocks by name: ``{name: (code, names it needs)}``.

    Convention: every python block is preceded by ``<!-- example: NAME -->`` (runs on
    its own) or ``<!-- example: NAME needs=model,processor,dataset -->`` (runs with
    those names bound by the test that owns it)."""
    text = README.read_text(encoding="utf-8")
    found = {
        m["name"]: (m["code"], tuple(filter(None, (m["needs"] or "").split(","))))
        for m in EXAMPLE.finditer(text)
    }
    blocks = PYTHON_BLOCK.findall(text)
    if len(blocks) != len(found):
        named = {code for code, _ in found.values()}
        loose = [b.splitlines()[0] for b in blocks if b not in named]
        raise AssertionError(f"README python blocks without an example marker: {loose}")
    return found


def run_example(name: str, **names: Any) -> dict[str, Any]:
    """Executes the README example ``name`` with ``names`` bound; returns its namespace."""
    code, needs = readme_examples()[name]
    missing = set(needs) - set(names)
    if missing:
        raise AssertionError(f"README example {name!r} needs {sorted(missing)}")
    namespace = {"__name__": f"readme_{name}", **names}
    exec(compile(code, f"README.md:{name}", "exec"), namespace)
    return namespace


def two_ranks(script: str, processor: Any, tmp_path: Path, *args: str, timeout: int = 300) -> Any:
    """Runs ``script`` on two CPU ranks (torchrun, gloo) with the saved ``processor``:
    argv is ``processor_dir out_json *args``; returns the JSON the ranks wrote. A rank
    failure or a hang (``timeout`` seconds) fails the test with the ranks' output."""
    import json
    import os
    import subprocess
    import sys

    import pytest

    processor_dir = tmp_path / "processor"
    processor.save_pretrained(processor_dir)
    path = tmp_path / "rank.py"
    path.write_text(script)
    out = tmp_path / "ranks.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node=2", str(path), str(processor_dir), str(out), *args]
    try:
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as hang:
        pytest.fail(f"the ranks hung (no result after {hang.timeout} s)")
    if result.returncode != 0:
        pytest.fail(f"torchrun failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}")
    return json.loads(out.read_text())


def assert_same_batch(fast: dict, slow: dict, pixel_tolerance: float = 0.0) -> None:
    """The fast path's batch equals the processor's: the same keys in the same order, each
    tensor's dtype and shape, every token-axis and grid value, and pixels within
    ``pixel_tolerance`` (0: bit for bit)."""
    assert list(fast) == list(slow)
    for key in slow:
        a, b = fast[key], slow[key]
        assert a.dtype == b.dtype and a.shape == b.shape, key
        if key.startswith("pixel_values"):
            difference = (a.double() - b.double()).abs().max().item() if a.numel() else 0.0
            assert difference <= pixel_tolerance, (key, difference)
        else:
            assert torch.equal(a, b), key


def processor_calls(monkeypatch: Any, processor: Any) -> list[int]:
    """A list that grows by one on each call of ``processor`` (its class's ``__call__``
    wrapped for the test), to assert whether a batch took the fast path."""
    calls: list[int] = []
    original = type(processor).__call__
    monkeypatch.setattr(
        type(processor),
        "__call__",
        lambda self, *a, **k: calls.append(1) or original(self, *a, **k),
    )
    return calls
