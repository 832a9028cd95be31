"""Shared fixtures: real processors built offline once per test session. The builders
the tests share live in ``helpers.py`` beside this file (``from helpers import ...``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

TESTS = str(Path(__file__).resolve().parent)
if TESTS not in sys.path:
    sys.path.insert(0, TESTS)

from vlm_collate import testing  # noqa: E402


@pytest.fixture(scope="session")
def qwen_processor():
    """A real Qwen2_5_VLProcessor on the real Qwen2 vocabulary."""
    return testing.qwen2_5_vl_processor()


@pytest.fixture(scope="session")
def qwen_tokenizer(qwen_processor):
    return qwen_processor.tokenizer
