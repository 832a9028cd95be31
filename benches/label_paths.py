"""Label path and cost per family, and the cost of both label paths against the number
of turns (issue 20).

* "label path and cost per family": for each family of
  ``vlm_collate.testing.families.FAMILY_PROCESSORS`` (real processor, its published
  template), ``check_template``'s method (markers or exact, with the reason) and the
  median time of ``build_labels`` on a batch of text conversations that processor
  rendered and tokenized, beside the exact path's time on the same batch;
* "label paths against turns": one conversation of 10, 40, 160 and 640 turns on
  Qwen2.5-VL and GLM-4.1V, the marker path (``build_labels``) and the exact path
  (``exact_labels``), labels checked equal.

    python -m benches.label_paths [--quick]   # prints the tables, writes the label-paths
                                              # block of docs/benchmarks.md (full run only)
"""

from __future__ import annotations

import sys
from typing import Any

import numpy as np
import torch

from vlm_collate import build_labels, check_template
from vlm_collate.pipeline.labels import exact_labels
from vlm_collate.processor.render import renderer_for

from .common import Context, Table, fmt_time, measure_all

TURNS = (10, 40, 160, 640)
QUICK_TURNS = (10, 40)
QUICK_FAMILIES = ("qwen2_vl", "glm4v", "smolvlm")


def steps(settings: Any) -> int:
    from vlm_collate.testing.families import FAMILY_PROCESSORS

    families = QUICK_FAMILIES if settings.quick else tuple(FAMILY_PROCESSORS)
    return len(families) + 2


def _conversation(turns: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    words = ["the", "red", "car", "is", "parked", "near", "a", "blue", "house", "today"]
    messages = []
    for k in range(turns):
        question = " ".join(rng.choice(words, 8)) + f" {k}?"
        answer = " ".join(rng.choice(words, 24)) + "."
        messages.append({"role": "user", "content": [{"type": "text", "text": question}]})
        messages.append({"role": "assistant", "content": [{"type": "text", "text": answer}]})
    return messages


def _batch(processor: Any, conversations: list) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch as the collators render it: each role's content in the form the template
    renders (GLM-4.1V prints list content of an assistant turn as a Python literal, so its
    replies are given as strings; ``check_template`` reports the forms)."""
    tokenizer = getattr(processor, "tokenizer", processor)
    render = renderer_for(processor)
    texts = [render(c) for c in conversations]
    enc = tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="pt")
    return enc["input_ids"].long(), enc["attention_mask"].long()


def _times(processor: Any, conversations: list, settings: Any) -> dict[str, float]:
    ids, mask = _batch(processor, conversations)
    fns = {
        "markers": lambda: build_labels(ids, conversations, processor, attention_mask=mask),
        "exact": lambda: exact_labels(ids.numpy(), mask.numpy(), conversations, processor)[0],
    }
    agree = bool(np.array_equal(fns["markers"]().numpy(), fns["exact"]()))
    return {"agree": agree, **{k: t.median_s for k, t in measure_all(fns, settings).items()}}


def _family_table(ctx: Context) -> Table:
    from vlm_collate.testing.families import FAMILY_PROCESSORS

    s = ctx.settings
    turns = 4
    conversations = [_conversation(turns, seed) for seed in range(s.batch)]
    table = Table(
        "label_paths_families",
        f"Label path and cost per family, batch of {s.batch}, {turns} turns, median per batch",
        ["family", "path", "tokens", "build_labels", "exact path", "why exact"],
    )
    names = QUICK_FAMILIES if s.quick else tuple(FAMILY_PROCESSORS)
    for name in names:
        ctx.advance(f"label paths: {name}")
        processor = FAMILY_PROCESSORS[name]()
        report = check_template(processor)
        times = _times(processor, conversations, s)
        tokens = int(_batch(processor, conversations)[1].sum())
        reason = "" if report.method == "markers" else report.reason
        table.rows.append(
            [
                name,
                report.method,
                f"{tokens:,}",
                fmt_time(times["markers"]) + ("" if times["agree"] else " ≠"),
                fmt_time(times["exact"]),
                reason,
            ]
        )
        table.raw.append({"family": name, "path": report.method, "tokens": tokens, **times})
    table.notes.append(
        "build_labels takes the path check_template names (markers: verified assistant "
        "markers, one engine call, with the per-row reply count check; exact: differential "
        "rendering per conversation); the exact path's time on the same batch is shown for "
        "every family; ≠ marks a batch where the two paths' labels differ."
    )
    return table


def _turns_table(ctx: Context) -> Table:
    from vlm_collate.testing import qwen2_5_vl_processor
    from vlm_collate.testing.families import glm4v_processor

    s = ctx.settings
    table = Table(
        "label_paths_turns",
        "Label paths against the number of turns, one conversation, median time",
        ["turns", "Qwen2.5-VL markers", "Qwen2.5-VL exact", "GLM-4.1V markers", "GLM-4.1V exact"],
    )
    processors = {"Qwen2.5-VL": qwen2_5_vl_processor(), "GLM-4.1V": glm4v_processor()}
    times: dict[str, dict[int, dict[str, float]]] = {}
    for model, processor in processors.items():
        ctx.advance(f"label paths against turns: {model}")
        times[model] = {}
        for turns in QUICK_TURNS if s.quick else TURNS:
            times[model][turns] = _times(processor, [_conversation(turns, turns)], s)
    for turns in QUICK_TURNS if s.quick else TURNS:
        row = [str(turns)]
        for model in processors:
            cell = times[model][turns]
            mark = "" if cell["agree"] else " ≠"
            row += [fmt_time(cell["markers"]) + mark, fmt_time(cell["exact"])]
        table.rows.append(row)
        table.raw.append({"turns": turns, **{m: times[m][turns] for m in processors}})
    table.notes.append(
        "Each user turn about 10 words, each reply about 25; "
        "≠ marks labels that differ between the paths."
    )
    return table


def run(ctx: Context) -> list[Table]:
    return [_family_table(ctx), _turns_table(ctx)]


def block_text(tables: list[Table], how: str) -> str:
    """The label-paths block of docs/benchmarks.md: the run's line and both tables."""
    from .common import machine

    m = machine()
    head = f"Run of {m['date']}, {how}, {m['cpu']}, {m['cores']} cores, 1 torch thread."
    return "\n".join([head, ""] + [t.markdown() for t in tables]) + "\n"


def main(argv: list[str]) -> int:
    from .common import Settings
    from .readme import ROOT, write_block

    quick = "--quick" in argv
    torch.set_num_threads(1)
    from vlm_collate.testing import qwen2_5_vl_processor

    ctx = Context(Settings(quick=quick), qwen2_5_vl_processor())
    tables = run(ctx)
    text = block_text(tables, f"`python -m benches.label_paths{' --quick' if quick else ''}`")
    print(text)
    if not quick:
        print("wrote", write_block(ROOT / "docs", "label-paths", text))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
