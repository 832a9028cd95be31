"""A new user's first hour (issue 18): the demo says truthfully what its batches hold,
`make test` installs nothing on the system, env.sh shows progress and is safe to run
twice at once, `vlm-collate bench` works from a clone (and says what to do without one),
every command and flag has help, and the tiny model of ``vlm_collate.testing`` trains a
step with its defaults."""

from __future__ import annotations

import argparse
import fcntl
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from vlm_collate import VLMCollator, cli
from vlm_collate.cli import commands
from vlm_collate.cli.datafiles import read_records, sample_data_path

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
COMMANDS = ("inspect", "check", "demo", "bench", "verify")


def _sample_examples(n: int = 4) -> list[dict]:
    return [r.example for r in read_records(sample_data_path(), limit=n)]


def _console_script() -> list[str]:
    script = Path(sys.executable).with_name("vlm-collate")
    return [str(script)] if script.exists() else [sys.executable, "-m", "vlm_collate.cli"]


def _run_command(*args: str, cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    """``vlm-collate ARGS`` as a person runs it (the console script: the current folder
    is not on its sys.path), with this clone's python/ first."""
    env = {**os.environ, "PYTHONPATH": str(ROOT / "python"), "COLUMNS": "100"}
    return subprocess.run(
        [*_console_script(), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env=env,
    )


# --------------------------------------------------------------------------- demo


def test_label_alignment_is_read_from_the_batch(qwen_processor):
    examples = _sample_examples()
    unshifted = VLMCollator(qwen_processor)(examples)
    shifted = VLMCollator(qwen_processor, shift=True)(examples)
    assert "shift_labels" not in unshifted and "shift_labels" in shifted
    assert commands.label_alignment(unshifted) == "unshifted"
    assert commands.label_alignment(shifted) == "shifted"
    # Without the shift_labels key the ids/labels alignment alone tells.
    bare = {k: v for k, v in shifted.items() if k != "shift_labels"}
    assert commands.label_alignment(bare) == "shifted"
    no_targets = {**unshifted, "labels": torch.full_like(unshifted["labels"], -100)}
    assert commands.label_alignment(no_targets) is None


def _demo(capsys, monkeypatch, qwen_processor, *args: str) -> str:
    monkeypatch.setattr(commands, "builtin_processor", lambda status: qwen_processor)
    code = cli.main(["demo", "--workers", "0", "--color", "never", *args])
    out = capsys.readouterr().out
    assert code == 0, out
    return out


def test_demo_says_its_default_batches_are_unshifted(capsys, monkeypatch, qwen_processor):
    out = _demo(capsys, monkeypatch, qwen_processor)
    assert "pre-shifted" not in out
    assert "first batch: labels unshifted (Hugging Face style" in out
    assert "the model's loss shifts them once" in out
    assert re.search(r"first batch: input_ids \(4, (\d+)\),.* labels \(4, \1\)", out)
    assert "shift_labels" not in out
    # The view is of that batch itself (no re-collation needed), targets marked.
    assert "the first batch, token by token" in out
    assert "«A red circle, centred on a white background.<|im_end|>»" in out


def test_demo_shift_says_pre_shifted(capsys, monkeypatch, qwen_processor):
    out = _demo(capsys, monkeypatch, qwen_processor, "--shift")
    assert "first batch: labels pre-shifted (labels[i] is the token after input_ids[i]" in out
    assert "shift_labels (4," in out
    assert "labels unshifted" not in out
    assert "the first batch again with shift=False" in out
    assert "«A red circle, centred on a white background.<|im_end|>»" in out


# --------------------------------------------------------------------------- help


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    raise AssertionError("no subcommands")


def test_every_subcommand_and_flag_has_help():
    parser = commands.build_parser()
    subcommands = _subparsers(parser)
    assert set(subcommands) == set(COMMANDS)
    for name, sub in [("vlm-collate", parser), *subcommands.items()]:
        assert sub.description and len(sub.description) > 40, name
        assert sub.epilog and sub.epilog.startswith("examples:"), name
        for action in sub._actions:
            if isinstance(action, argparse._SubParsersAction):
                continue
            assert action.help and action.help != argparse.SUPPRESS, (name, action.dest)


def test_help_output_of_every_command(capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--help"])
    top = capsys.readouterr().out
    assert done.value.code == 0
    for name in COMMANDS:
        assert re.search(rf"^\s+{name}\s+\S", top, re.M), name  # listed with its help line
        assert f"vlm-collate {name}" in top  # and an example
    for name in COMMANDS:
        with pytest.raises(SystemExit) as done:
            cli.main([name, "--help"])
        text = capsys.readouterr().out
        assert done.value.code == 0
        assert text.startswith(f"usage: vlm-collate {name}")
        assert "examples:\n  vlm-collate " in text
    with pytest.raises(SystemExit):
        cli.main(["bench", "--help"])
    bench = capsys.readouterr().out
    for flag in ("--quick", "--out DIR", "--only NAME"):
        assert flag in bench
    assert "source clone" in bench and "make bench" in bench
    with pytest.raises(SystemExit):
        cli.main(["demo", "--help"])
    demo = capsys.readouterr().out
    for flag in ("--batch-size N", "--workers N", "--shift", "--color"):
        assert flag in demo
    assert "unshifted" in demo and "pre-shifted" in demo


# --------------------------------------------------------------------------- bench


def test_bench_finds_the_clone_from_its_root_and_from_the_package(monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    assert commands.find_benches() == ROOT / "benches"
    monkeypatch.chdir(tmp_path)  # no benches/ here: the one beside python/vlm_collate
    assert commands.find_benches() == ROOT / "benches"
    assert commands.find_benches([tmp_path / "benches"]) is None


@pytest.mark.parametrize("where", ["root", "elsewhere"])
def test_bench_console_script_resolves_the_suite(where, tmp_path):
    # An unknown benchmark name is refused by the suite's own parser: proof that the
    # console script (whose sys.path lacks the current folder) found and started it.
    done = _run_command("bench", "--only", "nope", cwd=ROOT if where == "root" else tmp_path)
    assert done.returncode == 2, done.stderr[-2000:]
    assert "usage: vlm-collate bench" in done.stderr
    assert "invalid choice: 'nope'" in done.stderr
    assert "source checkout" not in done.stderr


@pytest.mark.slow
def test_bench_quick_runs_from_the_clone_root(tmp_path):
    out = tmp_path / "results"
    done = _run_command(
        "bench", "--quick", "--only", "labels", "--out", str(out), cwd=ROOT, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert (out / "results.json").is_file() and (out / "results.md").is_file()


def test_bench_without_a_clone_says_how_to_run_it(capsys, monkeypatch, tmp_path):
    # An installed wheel: no benches package importable, none in the places looked at.
    monkeypatch.setattr(commands, "_importable_suite", lambda: None)
    monkeypatch.setattr(commands, "bench_folders", lambda: [tmp_path / "benches"])
    assert cli.main(["bench", "--quick"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("vlm-collate: error: ")
    assert "benches/ package of a source checkout" in err
    assert str(tmp_path / "benches") in err
    assert "clone the repository" in err and "make bench" in err


def test_a_wheel_install_never_looks_beside_site_packages(monkeypatch, tmp_path):
    site = tmp_path / "lib" / "python3.11" / "site-packages" / "vlm_collate" / "cli"
    monkeypatch.setattr(commands, "PACKAGE_DIR", site)
    monkeypatch.chdir(tmp_path)
    assert commands.bench_folders() == [tmp_path / "benches"]


# --------------------------------------------------------------------------- make / env.sh


def _without_comments(text: str) -> str:
    return "\n".join(line.split("#", 1)[0] for line in text.splitlines())


def test_make_test_installs_nothing_on_the_system():
    env_sh = (SCRIPTS / "env.sh").read_text()
    assert "apt-get" not in _without_comments(env_sh) and "apt " not in _without_comments(env_sh)
    makefile = (ROOT / "Makefile").read_text()
    targets = dict(re.findall(r"^([\w-]+):\n((?:\t.*\n)+)", makefile, re.M))
    for name in ("test", "test-fast", "demo"):
        assert "browser" not in targets[name] and "apt" not in targets[name], name
    assert 'pytest -m "not slow" -q' in targets["test-fast"]
    assert "cargo" not in targets["test-fast"]
    # apt-get lives only behind the opt-in `make browser`.
    assert "install_browser.sh" in targets["browser"]
    holders = [
        p.name
        for p in SCRIPTS.iterdir()
        if p.is_file() and "apt-get" in _without_comments(p.read_text(errors="replace"))
    ]
    assert holders == ["install_browser.sh"]
    ci = _without_comments((ROOT / ".ci" / "run").read_text())
    assert ci.index("make browser ||") < ci.index("make test")


def test_env_sh_waits_for_a_concurrent_run(tmp_path):
    """Two first runs at once: the second waits on the cache folder's lock (it used to
    delete the venv the first one was installing). The waiting run is stopped before it
    does anything."""
    cache = tmp_path / "cache"
    cache.mkdir()
    with open(cache / "env.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        waiting = subprocess.Popen(
            ["bash", str(SCRIPTS / "env.sh")],
            env={**os.environ, "VLM_COLLATE_CACHE": str(cache)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        try:
            line = waiting.stderr.readline()
            assert "waiting for another scripts/env.sh to finish" in line
            assert str(cache / "env.lock") in line
            time.sleep(0.5)
            assert waiting.poll() is None  # still blocked on the lock
            assert not any(cache.glob("venv-*"))  # nothing touched
        finally:
            os.killpg(waiting.pid, signal.SIGTERM)
            waiting.communicate(timeout=30)


def test_env_sh_says_what_each_slow_step_does():
    text = (SCRIPTS / "env.sh").read_text()
    for step in ("[1/4]", "[2/4]", "[3/4]", "[4/4]", "building the Rust engine"):
        assert step in text
    assert "flock" in text


def test_html_browser_test_skips_saying_how_to_get_a_browser():
    cli_tests = next((ROOT / "tests").rglob("test_cli.py")).read_text()
    assert "make browser" in cli_tests


# --------------------------------------------------------------------------- tiny model


def test_tiny_config_with_its_defaults_runs_a_forward_pass(qwen_processor):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

    from vlm_collate.testing.tiny_models import tiny_qwen_vl_config

    torch.manual_seed(0)
    model = Qwen2_5_VLForConditionalGeneration(Qwen2_5_VLConfig(**tiny_qwen_vl_config()))
    batch = VLMCollator(qwen_processor)(_sample_examples(2))
    with torch.no_grad():
        out = model(**batch)
    assert out.logits.shape[:2] == batch["input_ids"].shape
    assert math.isfinite(out.loss.item())


def test_tiny_model_trains_a_step_on_a_collated_batch(qwen_processor):
    from vlm_collate.testing.tiny_models import tiny_qwen_vl_model

    model = tiny_qwen_vl_model()
    batch = VLMCollator(qwen_processor)(_sample_examples(4))
    assert "pixel_values" in batch and int(batch["image_grid_thw"].shape[0]) >= 2
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    before = model(**batch).loss
    assert math.isfinite(before.item())
    # Near the uniform loss over the vocabulary: random weights, nothing learnt yet.
    assert abs(before.item() - math.log(model.config.text_config.vocab_size)) < 1.0
    before.backward()
    optimizer.step()
    optimizer.zero_grad()
    after = model(**batch).loss
    assert after.item() < before.item()
    # The same seed, the same model.
    assert torch.equal(tiny_qwen_vl_model().lm_head.weight, tiny_qwen_vl_model().lm_head.weight)


@pytest.mark.parametrize("hidden_size", [12, 16, 32, 64])
def test_tiny_config_rotary_sections_fit_the_head(hidden_size):
    from vlm_collate.testing.tiny_models import mrope_section, tiny_qwen_vl_config

    text = tiny_qwen_vl_config(hidden_size=hidden_size)["text_config"]
    head_dim = hidden_size // text["num_attention_heads"]
    assert sum(text["rope_parameters"]["mrope_section"]) == head_dim // 2
    assert mrope_section(128) == [16, 24, 24]  # the released models' sections
    assert mrope_section(16) == [2, 3, 3]
