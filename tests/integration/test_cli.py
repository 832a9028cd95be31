"""The ``vlm-collate`` command: inspect (terminal and HTML views), demo, bench.

The commands run in-process through ``cli.main`` with the session's offline
Qwen2.5-VL processor; the demo runs once as the installed console script, as a
person would. The HTML view is rendered in headless Chromium where one is installed
(`make browser`, opt-in; the tests skip without it).
"""

from __future__ import annotations

import base64
import html
import importlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import make_image
from vlm_collate import cli, qwen2_5_collate_fn
from vlm_collate.cli import commands as cli_main
from vlm_collate.cli.datafiles import collate_records, read_records, sample_data_path
from vlm_collate.cli.inspect_view import MediaSpan, batch_view, render_html

SAMPLE = str(sample_data_path())
TARGET_RGB = (183, 240, 177)  # .tgt background in the HTML view


@pytest.fixture(autouse=True)
def builtin_processor(monkeypatch, qwen_processor):
    """The CLI's built-in processor is the session's (built once, ~10 s)."""
    monkeypatch.setattr(cli_main, "builtin_processor", lambda status: qwen_processor)
    return qwen_processor


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def write_jsonl(path: Path, *records: object) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in records]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def chat(user: object, reply: str | None = "ok") -> dict:
    conversation = [{"role": "user", "content": user}]
    if reply is not None:
        conversation.append({"role": "assistant", "content": reply})
    return {"conversation": conversation}


def png(path: Path, seed: int = 0) -> Path:
    make_image(56, 56, seed).save(path)
    return path


# --------------------------------------------------------------------------- sample data


def test_shipped_sample_dataset():
    records = read_records(SAMPLE)
    assert len(records) == 12
    conversations = [r.example["conversation"] for r in records]
    media = [
        item
        for c in conversations
        for m in c
        if isinstance(m["content"], list)
        for item in m["content"]
        if item["type"] == "image"
    ]
    text_only = [
        c
        for c in conversations
        if all(
            isinstance(m["content"], str) or all(i["type"] == "text" for i in m["content"])
            for m in c
        )
    ]
    assert len(text_only) == 1
    assert sum(1 for c in conversations if sum(m["role"] == "assistant" for m in c) >= 2) >= 4
    paths = [Path(item["image"]) for item in media if not item["image"].startswith("data:")]
    assert paths and all(p.is_absolute() and p.is_file() for p in paths)
    assert paths[0].parent == Path(SAMPLE).parent / "images"
    assert any(item["image"].startswith("data:image/png;base64,") for item in media)


# --------------------------------------------------------------------------- the view


def test_view_marks_exactly_the_labelled_tokens(qwen_processor):
    records = read_records(SAMPLE)
    batch = collate_records(records, qwen2_5_collate_fn, qwen_processor, shift=False)
    view = batch_view(batch, qwen_processor, [r.where for r in records])
    image_pad = qwen_processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")
    for row, sample in enumerate(view.samples):
        mask = batch["attention_mask"][row].bool()
        ids, labels = batch["input_ids"][row][mask].tolist(), batch["labels"][row][mask].tolist()
        shown, targets = [], []
        for piece in sample.pieces:
            piece_ids = (
                [piece.token_id] * piece.count if isinstance(piece, MediaSpan) else piece.ids
            )
            shown.extend(piece_ids)
            if piece.target:
                targets.extend(piece_ids)
        assert shown == ids  # every token is shown, in order, nothing but padding left out
        assert targets == [t for t, label in zip(ids, labels, strict=True) if label != -100]
        assert all(s.token_id == image_pad and not s.target for s in sample.media)
        assert sum(s.count for s in sample.media) == ids.count(image_pad)
    assert view.targets == batch.report.target_tokens
    assert view.misaligned == 0
    assert view.media_counts()["image"][0] == 13  # two samples hold two images each


def test_shifted_batch_is_flagged(qwen_processor):
    records = read_records(SAMPLE, limit=2)
    batch = collate_records(records, qwen2_5_collate_fn, qwen_processor)  # shift=True
    view = batch_view(batch, qwen_processor)
    assert view.misaligned > 0


# --------------------------------------------------------------------------- inspect


def test_inspect_without_a_terminal_marks_targets(capsys):
    code, out, err = run(capsys, "inspect", SAMPLE, "--limit", "3")
    assert code == 0, err
    assert "\x1b[" not in out
    assert "«A red circle, centred on a white background.<|im_end|>»" in out
    assert "«Three.<|im_end|>»" in out
    assert "<|vision_start|>[image: 16 tokens]<|vision_end|>What shape" in out
    assert "<|image_pad|>" not in out
    assert "sample.jsonl:2" in out
    summary = out[out.index("── summary ──") :]
    assert re.search(r"samples\s+3 \(3 in the batch\)", summary)
    assert re.search(r"target tokens\s+\d+ \(\d+\.\d% of tokens\)", summary)
    assert re.search(r"zero targets\s+0", summary)
    assert re.search(r"dropped\s+0", summary)
    assert re.search(r"media\s+2 images \(34 tokens\)", summary)


def test_inspect_in_colour_highlights_targets(capsys):
    code, out, _ = run(capsys, "inspect", SAMPLE, "--limit", "1", "--color", "always")
    assert code == 0
    assert "«" not in out and "»" not in out
    # The reply's tokens carry the target background (green3, 256-colour 40); the prompt's do not.
    assert re.search(r"\x1b\[[0-9;]*48;5;40m red\x1b\[0m", out)
    assert not re.search(r"\x1b\[[0-9;]*48;5;40m shape", out)
    assert " shape is in this picture" in out


def test_inspect_summary_counts_zero_target_dropped_and_truncated(capsys, tmp_path):
    data = write_jsonl(
        tmp_path / "d.jsonl",
        chat("hi", "hello there"),
        chat("a question nobody answers", None),
        chat("word " * 40, "long"),
    )
    code, out, err = run(
        capsys, "inspect", str(data), "--max-length", "30", "--on-overflow", "drop"
    )
    assert code == 0, err
    assert re.search(rf"zero targets\s+1: sample 1 \({re.escape(str(data))}:2\)", out)
    assert re.search(r"dropped\s+1\n\s+sample 2 \(.*d\.jsonl:3\): \d+ tokens > max_length=30", out)
    assert re.search(r"samples\s+3 \(2 in the batch\)", out)
    assert "── sample 2" not in out

    code, out, err = run(
        capsys, "inspect", str(data), "--max-length", "30", "--on-overflow", "truncate"
    )
    assert code == 0, err
    assert re.search(r"truncated\s+sample 2 \(.*d\.jsonl:3\)", out)
    assert "truncated to max_length" in out


def test_inspect_reads_every_image_form(capsys, tmp_path):
    (tmp_path / "pics").mkdir()
    relative = png(tmp_path / "pics" / "a.png", 1)
    url = png(tmp_path / "b.png", 2).as_uri()
    buffer = io.BytesIO()
    make_image(56, 84, 3).save(buffer, format="PNG")
    encoded = base64.b64encode(buffer.getvalue()).decode()
    assert relative.exists()
    data = write_jsonl(
        tmp_path / "forms.jsonl",
        chat([{"type": "image", "image": "pics/a.png"}, {"type": "text", "text": "one"}]),
        chat([{"type": "image", "path": url}, {"type": "text", "text": "two"}]),
        chat([{"type": "image", "image": encoded}, {"type": "text", "text": "three"}]),
        chat(
            [
                {"type": "image", "image": "data:image/png;base64," + encoded},
                {"type": "text", "text": "4"},
            ]
        ),
    )
    code, out, err = run(capsys, "inspect", str(data))
    assert code == 0, err
    assert re.search(r"media\s+4 images \(", out)
    assert out.count("[image: 4 tokens]") == 2 and out.count("[image: 6 tokens]") == 2


ERROR_CASES = {
    "bad json": (['{"conversation": [}'], 1, "not valid JSON"),
    "not an object": (["[1, 2]"], 1, "each line must be a JSON object"),
    "no conversation": ([{"dialogue": []}], 1, "missing 'conversation' or 'messages'"),
    "no content": ([{"conversation": [{"role": "user"}]}], 1, "message 0: missing 'content'"),
    "missing image": (
        [[{"type": "image", "image": "nowhere.png"}, {"type": "text", "text": "?"}]],
        1,
        "image file not found",
    ),
    "remote image": (
        [[{"type": "image", "image": "https://example.com/a.png"}, {"type": "text", "text": "?"}]],
        1,
        "remote image URLs",
    ),
    "placeholder in text": (["see <|image_pad|> here"], 1, "holds the media string"),
    "too long": (["word " * 40], 1, "more than max_length=30"),
}


@pytest.mark.parametrize("case", ERROR_CASES, ids=list(ERROR_CASES))
def test_inspect_bad_data_names_the_line(capsys, tmp_path, case):
    records, _, phrase = ERROR_CASES[case]
    record = records[0]
    if isinstance(record, (list, str)) and case not in ("bad json", "not an object"):
        record = chat(record)
    # Two good lines and a blank one first: the bad record is on line 4.
    data = write_jsonl(tmp_path / "bad.jsonl", chat("fine"), chat("also fine"), "", record)
    code, out, err = run(capsys, "inspect", str(data), "--max-length", "30")
    assert code == 1
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"vlm-collate: error: {data}:4: ")
    assert phrase in err


def test_inspect_usage_errors(capsys, tmp_path):
    code, _, err = run(capsys, "inspect", str(tmp_path / "absent.jsonl"))
    assert code == 1 and "no such file" in err
    code, _, err = run(capsys, "inspect", SAMPLE, "--family", "nope")
    assert code == 1 and "--family nope: unknown; known: " in err and "Qwen2_5_VLProcessor" in err
    code, _, err = run(capsys, "inspect", SAMPLE, "--processor", str(tmp_path / "none"))
    assert code == 1 and "no such folder" in err
    (tmp_path / "empty").mkdir()
    code, _, err = run(capsys, "inspect", SAMPLE, "--processor", str(tmp_path / "empty"))
    assert code == 1 and err.count("\n") == 1 and "cannot load a processor" in err
    code, _, err = run(capsys, "inspect", str(write_jsonl(tmp_path / "e.jsonl", "")))
    assert code == 1 and "no examples" in err


def test_inspect_family_option(capsys):
    code, out, err = run(capsys, "inspect", SAMPLE, "--limit", "2", "--family", "default")
    assert code == 0, err
    assert "default_collate_fn" in out.splitlines()[0]
    assert "«A red circle, centred on a white background.<|im_end|>»" in out


@pytest.mark.slow
def test_inspect_with_a_saved_processor(capsys, tmp_path, qwen_processor):
    qwen_processor.save_pretrained(tmp_path / "proc")
    code, out, err = run(
        capsys, "inspect", SAMPLE, "--limit", "2", "--processor", str(tmp_path / "proc")
    )
    assert code == 0, err
    assert "Qwen2_5_VLProcessor · qwen2_5_collate_fn" in out.splitlines()[0]
    assert "«Three.<|im_end|>»" in out


def _saved_dataset_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "saved"
    folder.mkdir()
    (folder / "dataset_dict.json").write_text('{"splits": ["train"]}')
    return folder


def test_saved_dataset_needs_the_datasets_package(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    code, _, err = run(capsys, "inspect", str(_saved_dataset_folder(tmp_path)))
    assert code == 1 and "needs the 'datasets' package: pip install datasets" in err


def test_saved_dataset_is_read_with_load_from_disk(capsys, tmp_path, monkeypatch):
    folder = _saved_dataset_folder(tmp_path)
    buffer = io.BytesIO()
    make_image(56, 84).save(buffer, format="PNG")
    undecoded = {"bytes": buffer.getvalue(), "path": None}  # an Image feature left undecoded
    rows = [
        chat([{"type": "image", "image": make_image(56, 56)}, {"type": "text", "text": "?"}]),
        chat("hi"),
        chat([{"type": "image", "image": undecoded, "text": None}, {"type": "text", "text": "?"}]),
    ]
    fake = types.ModuleType("datasets")
    fake.load_from_disk = lambda path: {"test": [], "train": rows} if path == str(folder) else None
    monkeypatch.setitem(sys.modules, "datasets", fake)
    code, out, err = run(capsys, "inspect", str(folder))
    assert code == 0, err
    assert f"{folder}[train] row 1" in out and "[image: 4 tokens]" in out
    assert "[image: 6 tokens]" in out


# --------------------------------------------------------------------------- HTML view


def test_html_view_is_self_contained(capsys, tmp_path):
    page = tmp_path / "view.html"
    code, out, err = run(capsys, "inspect", SAMPLE, "--limit", "2", "--html", str(page))
    assert code == 0, err
    text = page.read_text("utf-8")
    assert f"wrote {page}" in out
    assert not re.search(r"""(src|href)\s*=|https?://|@import""", text)
    assert text.count('class="media" data-ids') == 2 and "[image: 16 tokens]" in text
    assert 'class="tok tgt" data-ids="[32]" data-labels="[32]">A</span>' in text


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        pytest.skip(
            "no chromium (or chromium-browser) on PATH: `make browser` installs one "
            "(make test installs nothing on the system)"
        )
    return path


def _headless(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    command = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--hide-scrollbars",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def _view_page(qwen_processor, tmp_path: Path, name: str, *, no_targets: bool = False) -> Path:
    records = read_records(SAMPLE, limit=3)
    batch = collate_records(records, qwen2_5_collate_fn, qwen_processor, shift=False)
    if no_targets:
        batch["labels"] = torch.full_like(batch["labels"], -100)
    page = tmp_path / name
    page.write_text(render_html(batch_view(batch, qwen_processor)), "utf-8")
    return page


def _target_pixels(screenshot: Path) -> int:
    from PIL import Image

    with Image.open(screenshot) as image:
        pixels = np.asarray(image.convert("RGB"))
    return int((pixels == np.array(TARGET_RGB, dtype=np.uint8)).all(axis=-1).sum())


def test_html_view_in_headless_chromium_highlights_targets(tmp_path, qwen_processor):
    _chromium()
    counts = {}
    for no_targets in (False, True):
        page = _view_page(
            qwen_processor, tmp_path, f"p{int(no_targets)}.html", no_targets=no_targets
        )
        shot = tmp_path / f"p{int(no_targets)}.png"
        done = _headless(tmp_path, "--window-size=1000,1400", f"--screenshot={shot}", page.as_uri())
        assert shot.is_file(), done.stderr[-2000:]
        counts[no_targets] = _target_pixels(shot)
    # Only the legend's swatch is green when nothing is a target; the replies add far more.
    assert counts[True] < 1500
    assert counts[False] > counts[True] + 3000, counts


HOVER_PROBE = """<script>
window.addEventListener("load", function () {
  var target = document.querySelector("pre.tokens .tok.tgt");
  var context = document.querySelector("pre.tokens .tok:not(.tgt):not(.special)");
  var media = document.querySelector("pre.tokens .media");
  var tip = document.getElementById("tip");
  function hover(el) {
    var box = el.getBoundingClientRect();
    el.dispatchEvent(new MouseEvent("mouseover", {bubbles: true, clientX: box.left + 1,
                                                  clientY: box.top + 1}));
    return {text: tip.textContent, display: getComputedStyle(tip).display};
  }
  var result = {
    targetBackground: getComputedStyle(target).backgroundColor,
    contextBackground: getComputedStyle(context).backgroundColor,
    targetText: target.textContent, targetTip: hover(target),
    contextText: context.textContent, contextTip: hover(context), mediaTip: hover(media),
    targets: document.querySelectorAll("pre.tokens .tgt").length
  };
  var out = document.createElement("pre");
  out.id = "probe";
  out.textContent = JSON.stringify(result);
  document.body.appendChild(out);
});
</script></body>"""


def test_html_view_hover_shows_id_and_label(tmp_path, qwen_processor):
    _chromium()
    page = _view_page(qwen_processor, tmp_path, "hover.html")
    page.write_text(page.read_text("utf-8").replace("</body>", HOVER_PROBE), "utf-8")
    done = _headless(tmp_path, "--virtual-time-budget=5000", "--dump-dom", page.as_uri())
    match = re.search(r'<pre id="probe">(.*?)</pre>', done.stdout, re.S)
    assert match, (done.stdout[-2000:], done.stderr[-2000:])
    probe = json.loads(html.unescape(match.group(1)))
    assert probe["targetBackground"] == "rgb({}, {}, {})".format(*TARGET_RGB)
    assert probe["contextBackground"] == "rgba(0, 0, 0, 0)"
    assert probe["targets"] > 20
    tokenizer = qwen_processor.tokenizer
    target_id = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(probe["targetText"]))[0]
    assert probe["targetTip"]["display"] == "block"
    assert probe["targetTip"]["text"] == f"id {target_id}  label {target_id} (target)"
    assert re.fullmatch(r"id \d+  label -100 \(ignored\)", probe["contextTip"]["text"])
    assert probe["mediaTip"]["text"].startswith("image placeholder id 151655 x 16\nlabel -100")


# --------------------------------------------------------------------------- demo


@pytest.mark.slow
def test_demo_runs_from_the_installed_command(tmp_path):
    script = Path(sys.executable).with_name("vlm-collate")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "vlm_collate.cli"]
    done = subprocess.run(
        [*command, "demo"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "COLUMNS": "100"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert re.search(
        r"collated 12 samples in 3 batches with 2 worker processes: .* samples/s", done.stdout
    )
    assert "12/12" in done.stderr and "sample/s" in done.stderr  # the progress bar
    assert "── sample 0 · sample.jsonl:1" in done.stdout
    assert "«A red circle, centred on a white background.<|im_end|>»" in done.stdout
    assert re.search(r"media\s+3 images", done.stdout)


# --------------------------------------------------------------------------- bench


def test_bench_runs_the_suite_main(capsys, tmp_path, monkeypatch):
    benches = tmp_path / "benches"
    benches.mkdir()
    (benches / "__init__.py").write_text("")
    (benches / "run_all.py").write_text(
        "import json, pathlib\n"
        "def main(argv=None):\n"
        f"    pathlib.Path({str(tmp_path / 'argv.json')!r}).write_text(json.dumps(argv))\n"
        "    return 3\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "benches" or m.startswith("benches.")]:
        monkeypatch.delitem(sys.modules, name)
    assert cli.main(["bench", "--quick", "--out", "results"]) == 3
    assert json.loads((tmp_path / "argv.json").read_text()) == ["--quick", "--out", "results"]
    assert cli.main(["bench"]) == 3
    assert json.loads((tmp_path / "argv.json").read_text()) == []


def test_bench_without_a_checkout_says_how_to_run_it(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", os.getcwd())])
    for name in [m for m in sys.modules if m == "benches" or m.startswith("benches.")]:
        monkeypatch.delitem(sys.modules, name)
    real_import = importlib.import_module

    def no_benches(name, *args):
        if name.startswith("benches"):
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return real_import(name, *args)

    monkeypatch.setattr(importlib, "import_module", no_benches)
    monkeypatch.setattr(cli_main, "bench_folders", lambda: [tmp_path / "benches"])  # no clone
    code, _, err = run(capsys, "bench")
    assert code == 1 and err.count("\n") == 1
    assert "benches/ package of a source checkout" in err and "make bench" in err
