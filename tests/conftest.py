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


SLOW_FOLDERS = ("families", "integration")
"""Suites marked ``slow`` as a whole: every family's processor built and collated, and the
trainers, ranks, CLI and benchmarks run; ``make test-fast`` (``-m "not slow"``) is the
unit and bad-input suites."""
SLOW_FILES = ("test_templates.py", "test_templates_user_text.py", "test_templates_published.py")
"""Template matrices on real vocabularies (each template's markers derived and verified)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        path = Path(str(item.fspath))
        if path.parent.name in SLOW_FOLDERS or path.name in SLOW_FILES:
            item.add_marker(pytest.mark.slow)
