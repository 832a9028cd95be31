"""Label building: batch of 8, real Qwen2 vocabulary, 1k-16k tokens, 1-16 turns.

Methods (all return the same (B, L) labels on this data, checked every cell):
* engine markers: ``vlm_collate.build_labels`` (the default path: markers
  derived from the chat template, one engine call for the batch);
* engine contents: ``vlm_collate.pipeline.labels.labels_by_contents`` (tokenizes every
  reply, then one engine call searches them all);
* engine search only: that engine call alone, on replies tokenized beforehand;
* reference markers / contents: ``reference.py``, plain Python over lists
  (the contents variant gets the same reply tokenization);
* seed-style: tokenize each reply, compare a torch window at every position in a
  Python loop, decode the next token to test for end-of-turn;
* torch markers: whole-batch shifted comparisons and a running maximum;
* torch contents: per reply, first-token candidates then one gathered
  ``unfold`` comparison (given the same reply tokenization);
* exact path: ``vlm_collate.pipeline.labels.exact_labels``, differential rendering of every
  conversation mapped onto its row (what a template whose markers fail verification
  gets), shown beside the processor's own tokenization of the same batch.

A second table runs each published chat template style of the test matrix (real
vocabularies, ``vlm_collate.testing.vocabularies``) on the same conversations: the
path verification picks, the marker path, the exact path and the tokenization.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from vlm_collate import _engine, build_labels, reference
from vlm_collate.engine import ragged
from vlm_collate.formats.conversation import assistant_turns, extract_assistant_text
from vlm_collate.pipeline.labels import exact_labels, labels_by_contents
from vlm_collate.processor.markers import labels_plan, markers_for

from . import baselines, data
from .common import Context, Table, Target, fmt_ratio, fmt_time, measure_all

METHODS = (
    "engine markers",
    "engine contents",
    "engine search only",
    "reference markers",
    "reference contents",
    "seed-style",
    "torch markers",
    "torch contents",
)
TOKENIZE = "reply tokenization"
EXACT = "exact path"
PROCESSOR_TOKENIZE = "render + tokenize"
QUICK_TEMPLATES = (
    "ChatML (Qwen2.5-VL)",
    "Qwen3 reasoning",
    "Mistral Small 3.1",
    "Phi-4-multimodal",
)


def steps(ctx_settings) -> int:
    return len(ctx_settings.lengths) * len(ctx_settings.turns)


def _reply_ids(tokenizer: Any, conversations) -> list[list[list[int]]]:
    return [
        [
            tokenizer(extract_assistant_text(m), add_special_tokens=False)["input_ids"]
            for m in assistant_turns(c)
        ]
        for c in conversations
    ]


def _methods(processor: Any, ids: np.ndarray, mask: np.ndarray, conversations) -> dict:
    tokenizer = processor.tokenizer
    markers = markers_for(processor)
    ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
    stop_ids = [t for t in (tokenizer.eos_token_id, tokenizer.pad_token_id) if t is not None]
    per_row = [len(assistant_turns(c)) for c in conversations]

    def engine_markers():
        return build_labels(ids_t, conversations, processor, attention_mask=mask_t)

    def engine_contents():
        return torch.from_numpy(labels_by_contents(ids, mask, conversations, processor)[0])

    replies = [r for row in _reply_ids(tokenizer, conversations) for r in row]
    values, offsets = ragged(replies)
    per_row_array = np.asarray(per_row, dtype=np.int64)

    def engine_search_only():
        labels, _ = _engine.labels_from_contents(
            ids, mask, values, offsets, per_row_array, stop_ids, [], markers.ignore_ids
        )
        return torch.from_numpy(labels)

    def reference_markers():
        labels, _ = reference.labels_from_markers(
            ids, mask, markers.starts, markers.ends, markers.ignore_ids
        )
        return torch.tensor(labels)

    def reference_contents():
        replies = [r for row in _reply_ids(tokenizer, conversations) for r in row]
        values, offsets = ragged(replies)
        labels, _ = reference.labels_from_contents(
            ids, mask, values, offsets, per_row, stop_ids, [], markers.ignore_ids
        )
        return torch.tensor(labels)

    def seed_style():
        return baselines.seed_style_labels(ids_t, conversations, processor)

    def torch_markers():
        return baselines.torch_marker_labels(
            ids_t, mask_t, markers.starts, markers.ends, markers.ignore_ids
        )

    def torch_contents():
        replies = [
            [torch.tensor(r, dtype=torch.long) for r in row]
            for row in _reply_ids(tokenizer, conversations)
        ]
        return baselines.torch_content_labels(ids_t, mask_t, replies, stop_ids)

    def tokenize_only():
        return _reply_ids(tokenizer, conversations)

    def exact_path():
        return torch.from_numpy(exact_labels(ids, mask, conversations, processor)[0])

    def render_and_tokenize():
        texts = [data.render(tokenizer, c) for c in conversations]
        return tokenizer(texts, add_special_tokens=False, padding=True)

    return {
        "engine markers": engine_markers,
        "engine contents": engine_contents,
        "engine search only": engine_search_only,
        "reference markers": reference_markers,
        "reference contents": reference_contents,
        "seed-style": seed_style,
        "torch markers": torch_markers,
        "torch contents": torch_contents,
        TOKENIZE: tokenize_only,
        EXACT: exact_path,
        PROCESSOR_TOKENIZE: render_and_tokenize,
    }


def _slope(points: list[tuple[int, float]]) -> float | None:
    """Least-squares slope of log(time) against log(tokens)."""
    if len(points) < 2:
        return None
    x = np.log([p[0] for p in points])
    y = np.log([p[1] for p in points])
    return float(np.polyfit(x, y, 1)[0])


def run(ctx: Context) -> list[Table]:
    s = ctx.settings
    processor = ctx.processor
    results: list[dict[str, Any]] = []
    too_slow: dict[tuple[str, int], float] = {}
    for turns in s.turns:
        for length in s.lengths:
            ctx.advance(f"labels L={length} turns={turns}")
            ids, mask, conversations = data.label_batch(
                ctx.tokenizer, s.batch, length, turns, seed=length * 31 + turns
            )
            methods = _methods(processor, ids, mask, conversations)
            expected = methods["engine markers"]()
            assert int((expected != -100).sum()) > 0
            cell: dict[str, Any] = {
                "length": length,
                "turns": turns,
                "tokens": int(mask.sum()),
                "times": {},
                "runs": {},
                "agree": {},
            }
            for name, fn in methods.items():
                if name not in (TOKENIZE, PROCESSOR_TOKENIZE):
                    cell["agree"][name] = bool(torch.equal(fn(), expected))
            timed = {n: fn for n, fn in methods.items() if (n, turns) not in too_slow}
            timings = measure_all(timed, s)
            for name in methods:
                timing = timings.get(name)
                cell["times"][name] = None if timing is None else timing.median_s
                cell["runs"][name] = None if timing is None else timing.runs
                if timing is not None and timing.median_s > s.skip_after_s:
                    too_slow[(name, turns)] = timing.median_s
            results.append(cell)
    ctx.extra["labels"] = results
    return [
        _times_table(ctx, results),
        _ratio_table(ctx, results),
        _scaling_table(ctx, results),
        _template_table(ctx),
    ]


def _times_table(ctx: Context, results: list[dict[str, Any]]) -> Table:
    s = ctx.settings
    table = Table(
        "labels",
        f"Label building, batch of {s.batch}, median time per batch",
        ["L", "turns", *METHODS, TOKENIZE, EXACT, PROCESSOR_TOKENIZE],
    )
    disagree = []
    for cell in sorted(results, key=lambda c: (c["length"], c["turns"])):
        if cell["length"] not in s.table_lengths:
            continue
        row = [f"{cell['length']:,}", str(cell["turns"])]
        for name in (*METHODS, TOKENIZE, EXACT, PROCESSOR_TOKENIZE):
            row.append(fmt_time(cell["times"].get(name)))
            if name in cell["agree"] and not cell["agree"][name]:
                row[-1] += " ≠"
                disagree.append(f"{name} at L={cell['length']}, turns={cell['turns']}")
        table.rows.append(row)
    table.raw = results
    table.notes.append(
        "Every method's labels are compared with engine markers' in every cell"
        + (f"; these differ (marked ≠): {', '.join(disagree)}" if disagree else ": all agree.")
    )
    table.notes.append(
        f"'{TOKENIZE}': tokenizing every assistant reply on its own, a step inside every "
        "contents method (engine contents, reference contents, seed-style, torch contents) "
        "but not 'engine search only'; the marker methods need none. "
        f"'{EXACT}': differential rendering of each conversation, mapped onto its row; "
        f"'{PROCESSOR_TOKENIZE}': the chat template rendering and tokenization of the same "
        "batch, the work a collate call does before labelling."
    )
    skipped = sorted({(n, c["turns"]) for c in results for n, t in c["times"].items() if t is None})
    for name, turns in skipped:
        table.notes.append(
            f"{name}, {turns} turns: skipped at longer lengths after a run over "
            f"{s.skip_after_s:.0f} s."
        )
    return table


def _ratio_table(ctx: Context, results: list[dict[str, Any]]) -> Table:
    s = ctx.settings
    table = Table(
        "labels_speedup",
        "Label building: how many times faster vlm_collate is (same run, same data)",
        [
            "L",
            "turns",
            "markers vs seed-style",
            "markers vs best torch",
            "markers vs reference",
            "contents vs seed-style",
            "contents vs torch contents",
        ],
    )

    def ratio(t: dict, slow: str, fast: str) -> float | None:
        if t.get(slow) is None or t.get(fast) is None:
            return None
        return t[slow] / t[fast]

    for cell in sorted(results, key=lambda c: (c["length"], c["turns"])):
        t = cell["times"]
        best_torch = min(t["torch markers"], t["torch contents"])
        cell["best_torch"] = best_torch
        cell["speedup"] = {
            "markers_vs_seed": ratio(t, "seed-style", "engine markers"),
            "markers_vs_best_torch": best_torch / t["engine markers"],
            "markers_vs_reference": ratio(t, "reference markers", "engine markers"),
            "contents_vs_seed": ratio(t, "seed-style", "engine contents"),
            "contents_vs_torch": ratio(t, "torch contents", "engine contents"),
        }
        if cell["length"] not in s.table_lengths:
            continue
        table.rows.append(
            [f"{cell['length']:,}", str(cell["turns"])]
            + [fmt_ratio(v) for v in cell["speedup"].values()]
        )
    table.raw = [{"length": c["length"], "turns": c["turns"], **c["speedup"]} for c in results]
    table.notes.append("best torch = the faster of torch markers and torch contents in that cell.")
    _targets(ctx, results)
    return table


def _targets(ctx: Context, results: list[dict[str, Any]]) -> None:
    s = ctx.settings
    length = 4096 if 4096 in s.lengths else s.lengths[-1]
    turns = 4 if 4 in s.turns else s.turns[-1]
    cell = next(c for c in results if c["length"] == length and c["turns"] == turns)
    where = f"B={s.batch}, L={length}, {turns} turns"
    vs_seed = cell["speedup"]["markers_vs_seed"]
    vs_torch = cell["speedup"]["markers_vs_best_torch"]
    ctx.targets.append(
        Target(
            f"labels vs seed-style ({where})",
            "≥ 1000×",
            fmt_ratio(vs_seed),
            None if vs_seed is None else vs_seed >= 1000,
        )
    )
    ctx.targets.append(
        Target(f"labels vs best torch ({where})", "≥ 5×", fmt_ratio(vs_torch), vs_torch >= 5)
    )


def _scaling_table(ctx: Context, results: list[dict[str, Any]]) -> Table:
    s = ctx.settings
    table = Table(
        "labels_scaling",
        "Label building: log-log slope of time against batch tokens (1 = linear)",
        ["method", *[f"{t} turns" for t in s.turns]],
    )
    slopes: dict[str, dict[int, float | None]] = {}
    for name in METHODS:
        slopes[name] = {}
        for turns in s.turns:
            points = [
                (c["tokens"], c["times"][name])
                for c in results
                if c["turns"] == turns and c["times"].get(name) is not None
            ]
            slopes[name][turns] = _slope(points)
        table.rows.append(
            [name]
            + ["n/a" if slopes[name][t] is None else f"{slopes[name][t]:.2f}" for t in s.turns]
        )
    table.raw = [{"method": n, **{str(t): v for t, v in d.items()}} for n, d in slopes.items()]
    lengths = ", ".join(f"{n:,}" for n in s.lengths)
    table.notes.append(f"Fitted over L = {lengths} (batch tokens = attended tokens of the batch).")
    engine = [v for v in slopes["engine markers"].values() if v is not None]
    if engine:
        worst = max(engine)
        ctx.targets.append(
            Target(
                "labels time linear in tokens (engine markers, log-log slope)",
                "≈ 1 (≤ 1.15)",
                f"{worst:.2f} (worst over turns)",
                worst <= 1.15 and not math.isnan(worst),
            )
        )
    return table


# --------------------------------------------------------------------------- template styles


def _template_tokenizers() -> dict[str, Any]:
    """One tokenizer per published template style, on its real vocabulary."""
    from vlm_collate.testing import builders, vocabularies

    text = vocabularies.template_text

    def qwen(template: str, extra: tuple[str, ...] = ()) -> Any:
        tokenizer = builders.qwen2_tokenizer(extra)
        tokenizer.chat_template = template
        return tokenizer

    def qwen3() -> Any:
        tokenizer = builders.qwen3_omni_tokenizer()
        tokenizer.chat_template = text("qwen3")
        return tokenizer

    glm = ("[gMASK]", "<sop>", "<|system|>", "<|user|>", "<|assistant|>", "<|observation|>")
    return {
        "ChatML (Qwen2.5-VL)": lambda: qwen(text("qwen2_5_vl")),
        "Qwen3 reasoning": qwen3,
        "Llama 3.1": lambda: vocabularies.llama3_tokenizer(text("llama3_1")),
        "Llama 3.2 Vision": lambda: vocabularies.llama3_tokenizer(text("llama3_2_vision")),
        "Gemma 3": lambda: vocabularies.gemma3_tokenizer(text("gemma3")),
        "Mistral Small 3.1": lambda: vocabularies.mistral_tekken_tokenizer(
            text("mistral_small_3_1")
        ),
        "Phi-4-multimodal": lambda: vocabularies.phi4_tokenizer(text("phi4_multimodal")),
        "DeepSeek-R1": lambda: vocabularies.deepseek_tokenizer(text("deepseek_r1")),
        "GLM-4": lambda: qwen(text("glm4"), glm),
    }


def _template_table(ctx: Context) -> Table:
    s = ctx.settings
    length = 4096 if 4096 in s.lengths else s.lengths[-1]
    turns = 4 if 4 in s.turns else s.turns[-1]
    _, _, conversations = data.label_batch(ctx.tokenizer, s.batch, length, turns, seed=7)
    table = Table(
        "labels_templates",
        f"Labels per chat template style, batch of {s.batch}, about {length:,} tokens, "
        f"{turns} turns, median time per batch",
        ["template", "path", "markers", EXACT, PROCESSOR_TOKENIZE, "exact / tokenize"],
    )
    styles = _template_tokenizers()
    if s.quick:  # a smoke run: one template per kind of header
        styles = {k: styles[k] for k in QUICK_TEMPLATES}
    for name, build in styles.items():
        ctx.advance(f"labels template {name}")
        row, raw = _template_row(name, build(), conversations, s)
        table.rows.append(row)
        table.raw.append(raw)
    table.notes.append(
        "The same conversations rendered by each published template on its real vocabulary; "
        "where the markers are verified, their labels are checked equal to the exact path's."
    )
    return table


def _template_row(name: str, tokenizer: Any, conversations: list, s: Any) -> tuple[list[str], dict]:
    """One template style: its label path and the times of markers, exact path and
    render + tokenize on ``conversations``."""
    texts = [tokenizer.apply_chat_template(c, tokenize=False) for c in conversations]
    enc = tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="np")
    ids = enc["input_ids"].astype(np.int64)
    mask = enc["attention_mask"].astype(np.int64)
    ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
    plan = labels_plan(tokenizer)
    fns = {
        EXACT: lambda: exact_labels(ids, mask, conversations, tokenizer)[0],
        PROCESSOR_TOKENIZE: lambda: tokenizer(
            [tokenizer.apply_chat_template(c, tokenize=False) for c in conversations],
            add_special_tokens=False,
            padding=True,
        ),
    }
    if plan.method == "markers":
        fns["markers"] = lambda: build_labels(ids_t, conversations, tokenizer, mask_t)
        assert np.array_equal(fns["markers"]().numpy(), fns[EXACT]()), name
    times = {k: t.median_s for k, t in measure_all(fns, s).items()}
    ratio = times[EXACT] / times[PROCESSOR_TOKENIZE]
    row = [
        name,
        plan.method,
        fmt_time(times.get("markers")),
        fmt_time(times[EXACT]),
        fmt_time(times[PROCESSOR_TOKENIZE]),
        f"{ratio:.1f}×",
    ]
    return row, {"template": name, "path": plan.method, "exact_vs_tokenize": ratio, **times}


if __name__ == "__main__":
    import sys

    from .run_all import main

    sys.exit(main(["--only", "labels", *sys.argv[1:]]))
