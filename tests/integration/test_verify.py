"""``vlm-collate verify``: on the shipped sample with a tiny random Qwen2.5-VL, packed and
padded batches give each document the same logits and loss and a perfect predictor zero
loss (exit code 0); a collator whose labels are shifted wrongly fails (exit code 1)."""

from __future__ import annotations

import pytest
import torch

from vlm_collate.cli import verify
from vlm_collate.cli.commands import build_parser, main

pytestmark = pytest.mark.slow


def test_tiny_model_on_the_sample_passes(capsys):
    assert main(["verify", "--tiny", "--rows", "3", "--color", "never"]) == 0
    out = capsys.readouterr().out
    assert "pass: all" in out and "FAIL" not in out
    assert "perfect predictor" in out and "unshifted" in out and "pre-shifted" in out
    assert out.count("sample.jsonl:") >= 3 * 2  # logits and loss of every document


class RolledLabels:
    """A collator whose labels sit one column late (the bug of a double shift undone)."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, examples):
        batch = self.inner(examples)
        batch["labels"] = torch.roll(batch["labels"], 1, dims=1)
        batch["labels"][:, 0] = -100
        return batch


def test_wrongly_shifted_labels_fail(monkeypatch, capsys):
    real = verify.collators

    def broken(*args, **kwargs):
        padded, packed = real(*args, **kwargs)
        return RolledLabels(padded), packed

    monkeypatch.setattr(verify, "collators", broken)
    assert main(["verify", "--tiny", "--rows", "2", "--color", "never"]) == 1
    out = capsys.readouterr().out
    failed = [line for line in out.splitlines() if "FAIL" in line]
    assert any("perfect predictor" in line and "padded" in line for line in failed)
    assert any("loss" in line for line in failed)


def test_every_flag_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["verify"]
    assert sub.description
    for action in sub._actions:
        assert action.help, action.dest
    with pytest.raises(SystemExit):  # --model or --tiny is required
        parser.parse_args(["verify"])
