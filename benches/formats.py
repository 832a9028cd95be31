"""The cost of reading published row formats (issue 19): detecting a row's format and
converting it to a conversation, against a whole collate call on the same rows.

For each format (TRL ``messages``; ``messages`` with ``<image>`` tags and an ``images``
column; LLaVA/ShareGPT ``conversations``; OpenAI chat with a ``data:`` URL image; the
Cauldron; TRL prompt/completion), a batch of rows of that format, each with one image
(a PIL image, or the same image as a PNG ``data:`` URL for OpenAI), and a two-turn
exchange. Timed: ``conversations_of(rows)`` (detection and conversion of every row, the
step every collate call runs first) and ``VLMCollator(processor)(rows)`` (the whole call:
conversion, rendering, media, the Qwen2.5-VL fast path, labels). The issue's target:
detection and conversion under 2% of the collate call, for every format.

    python -m benches.formats [--quick]   # prints the table, writes the formats block
                                          # of docs/benchmarks.md (full run only)
"""

from __future__ import annotations

import base64
import io
import sys
from typing import Any

import numpy as np
from PIL import Image

from vlm_collate import VLMCollator
from vlm_collate.formats.detect import conversations_of, format_of

from .common import Context, Table, Target, fmt_time, measure_all

FORMATS = ("messages", "messages+tags", "sharegpt", "openai", "cauldron", "prompt_completion")
TARGET = 0.02
"""The issue's bound: detection and conversion under 2% of a collate call."""


def steps(settings: Any) -> int:
    return len(FORMATS)


def _image(seed: int, size: tuple[int, int]) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def _data_url(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def _row(fmt: str, k: int, image: Any) -> dict[str, Any]:
    """Row ``k`` in ``fmt``: one image, a question, a reply, a follow-up and its reply."""
    q1, a1 = f"What is in picture {k}?", f"A street with {k + 2} parked cars and a red door."
    q2, a2 = "And the weather?", "Overcast, the road is still wet from rain."
    if fmt == "messages":
        return {
            "messages": [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q1}]},
                {"role": "assistant", "content": [{"type": "text", "text": a1}]},
                {"role": "user", "content": [{"type": "text", "text": q2}]},
                {"role": "assistant", "content": [{"type": "text", "text": a2}]},
            ],
            "images": [image],
        }
    if fmt == "messages+tags":
        return {
            "messages": [
                {"role": "user", "content": "<image>" + q1},
                {"role": "assistant", "content": a1},
                {"role": "user", "content": q2},
                {"role": "assistant", "content": a2},
            ],
            "images": [image],
        }
    if fmt == "sharegpt":
        return {
            "id": f"{k:012d}",
            "image": image,
            "conversations": [
                {"from": "human", "value": "<image>\n" + q1},
                {"from": "gpt", "value": a1},
                {"from": "human", "value": q2},
                {"from": "gpt", "value": a2},
            ],
        }
    if fmt == "openai":
        return {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "image_url", "image_url": {"url": image}},
                        {"type": "text", "text": q1},
                    ],
                },
                {"role": "assistant", "content": a1},
                {"role": "user", "content": q2},
                {"role": "assistant", "content": a2},
            ]
        }
    if fmt == "cauldron":
        return {
            "images": [image],
            "texts": [
                {"user": q1, "assistant": a1, "source": "bench"},
                {"user": q2, "assistant": a2},
            ],
        }
    if fmt == "prompt_completion":
        return {
            "prompt": [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q1}]}
            ],
            "completion": [{"role": "assistant", "content": [{"type": "text", "text": a1}]}],
            "images": [image],
        }
    raise ValueError(fmt)


def rows(fmt: str, batch: int, size: tuple[int, int]) -> list[dict[str, Any]]:
    """A batch of ``fmt`` rows, each with its own image of ``size`` (width, height)."""
    out = []
    for k in range(batch):
        image = _image(k, size)
        out.append(_row(fmt, k, _data_url(image) if fmt == "openai" else image))
    return out


def run(ctx: Context) -> list[Table]:
    settings = ctx.settings
    batch = 2 if settings.quick else settings.batch
    size = (224, 224) if settings.quick else (448, 336)
    collator = VLMCollator(ctx.processor)
    table = Table(
        "formats",
        f"Format detection and conversion vs a collate call (Qwen2.5-VL, fast path, B={batch}, "
        f"one {size[0]}x{size[1]} image and 2 turns per row)",
        ["format", "detected as", "detect + convert", "collate call", "share"],
    )
    worst = 0.0
    for fmt in FORMATS:
        ctx.advance(f"formats: {fmt}")
        examples = rows(fmt, batch, size)
        detected = format_of(examples[0])
        timings = measure_all(
            {
                "convert": lambda rows=examples: conversations_of(rows),
                "collate": lambda rows=examples: collator(rows),
            },
            settings,
        )
        convert, collate = timings["convert"].median_s, timings["collate"].median_s
        share = convert / collate
        worst = max(worst, share)
        table.rows.append(
            [fmt, detected, fmt_time(convert), fmt_time(collate), f"{100 * share:.2f}%"]
        )
        table.raw.append(
            {"format": fmt, "detected": detected, "convert_s": convert, "collate_s": collate}
        )
    table.notes.append(
        "detect + convert: `conversations_of(rows)`, format detection and conversion of every "
        "row (a collate call runs it first); collate call: `VLMCollator(processor)(rows)`, "
        "conversion included; medians of interleaved repeats."
    )
    ctx.targets.append(
        Target(
            "format detection + conversion / collate call",
            f"< {100 * TARGET:.0f}% for every format",
            f"{100 * worst:.2f}% (worst format)",
            worst < TARGET,
        )
    )
    return [table]


def block_text(tables: list[Table], targets: list[Target], how: str) -> str:
    """The formats block of docs/benchmarks.md: the table and its target."""
    from .common import machine

    m = machine()
    lines = [f"Run of {m['date']}, {how}, {m['cpu']}, {m['cores']} cores, 1 torch thread.", ""]
    lines += [t.markdown() for t in tables]
    lines += ["| target | goal | measured | verdict |", "|---|---|---|---|"]
    for t in targets:
        verdict = "n/a" if t.met is None else "met" if t.met else "MISSED"
        lines.append(f"| {t.name} | {t.goal} | {t.measured} | {verdict} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    import torch

    from vlm_collate.testing import qwen2_5_vl_processor

    from .common import Settings
    from .readme import ROOT, write_block

    quick = "--quick" in argv
    torch.set_num_threads(1)
    ctx = Context(Settings(quick=quick), qwen2_5_vl_processor())
    tables = run(ctx)
    how = "`python -m benches.formats" + (" --quick" if quick else "") + "`"
    text = block_text(tables, ctx.targets, how)
    print(text)
    if not quick:
        print("wrote", write_block(ROOT / "docs", "formats", text))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
