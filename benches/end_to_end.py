"""End to end: ``qwen2_5_collate_fn`` against the processor call alone and the
seed-style collate, on a real ``Qwen2_5_VLProcessor`` (offline, real vocabulary).

* processor alone (the floor): ``processor(text=..., images=..., padding=True)``
  on conversations already rendered to text;
* render + processor: the same plus ``apply_chat_template`` for each sample,
  the least any collate function does;
* vlm_collate: ``qwen2_5_collate_fn(examples, processor)``;
* seed-style: render, processor, seed-style labels, shape-based shift.
"""

from __future__ import annotations

from typing import Any

import torch

from vlm_collate import qwen2_5_collate_fn
from vlm_collate.formats.conversation import with_list_content

from . import baselines, data
from .common import Context, Table, Target, fmt_ratio, fmt_time, measure_all

METHODS = ("processor alone", "render + processor", "vlm_collate", "seed-style")


def scenarios(settings) -> list[dict[str, int]]:
    if settings.quick:
        return [{"batch": 4, "image": 112, "turns": 2, "text_tokens": 128}]
    return [
        {"batch": 8, "image": 448, "turns": 2, "text_tokens": 512},
        {"batch": 8, "image": 448, "turns": 4, "text_tokens": 4096},
    ]


def steps(settings) -> int:
    return len(scenarios(settings))


def examples_for(tokenizer: Any, batch: int, image: int, turns: int, text_tokens: int, seed=0):
    """``batch`` examples of one ``image`` x ``image`` picture and ``turns`` turns."""
    maker = data.TextMaker(tokenizer, seed=seed)
    return [
        {
            "conversation": data.vision_conversation(
                maker, text_tokens, turns, data.image(image, seed * 1000 + i)
            )
        }
        for i in range(batch)
    ]


def methods_for(processor: Any, examples: list[dict]) -> dict[str, Any]:
    conversations = [e["conversation"] for e in examples]
    texts = [
        processor.apply_chat_template(with_list_content(c), tokenize=False) for c in conversations
    ]
    images = [
        item["image"]
        for c in conversations
        for m in c
        if isinstance(m["content"], list)
        for item in m["content"]
        if item["type"] == "image"
    ]

    def processor_alone():
        return processor(
            text=texts, images=images, padding=True, padding_side="right", return_tensors="pt"
        )

    def render_and_processor():
        rendered = [
            processor.apply_chat_template(with_list_content(c), tokenize=False)
            for c in conversations
        ]
        return processor(
            text=rendered, images=images, padding=True, padding_side="right", return_tensors="pt"
        )

    return {
        "processor alone": processor_alone,
        "render + processor": render_and_processor,
        "vlm_collate": lambda: qwen2_5_collate_fn(examples, processor),
        "seed-style": lambda: baselines.seed_style_collate(examples, processor),
    }


def run(ctx: Context) -> list[Table]:
    s = ctx.settings
    table = Table(
        "end_to_end",
        "End to end collate, Qwen2.5-VL processor, median time per batch",
        [
            "batch",
            "tokens (B×L)",
            *METHODS,
            "vlm_collate / processor",
            "vlm_collate / render+processor",
            "seed-style / vlm_collate",
        ],
    )
    for k, sc in enumerate(scenarios(s)):
        ctx.advance(f"end to end {sc['batch']}×{sc['image']}px, {sc['turns']} turns")
        examples = examples_for(ctx.tokenizer, seed=k, **sc)
        methods = methods_for(ctx.processor, examples)
        ours = methods["vlm_collate"]()
        seed = methods["seed-style"]()
        same = torch.equal(ours["labels"], seed["labels"]) and torch.equal(
            ours["input_ids"], seed["input_ids"]
        )
        times = {name: t.median_s for name, t in measure_all(methods, s).items()}
        shape = tuple(ours["input_ids"].shape)
        over_floor = times["vlm_collate"] / times["processor alone"]
        over_render = times["vlm_collate"] / times["render + processor"]
        vs_seed = times["seed-style"] / times["vlm_collate"]
        desc = (
            f"{sc['batch']} × ({sc['image']}² image, {sc['turns']} turns, "
            f"~{sc['text_tokens']} text tokens)"
        )
        table.rows.append(
            [desc, f"{shape[0]}×{shape[1] + 1:,}"]
            + [fmt_time(times[n]) for n in METHODS]
            + [f"{over_floor:.3f}×", f"{over_render:.3f}×", fmt_ratio(vs_seed)]
        )
        table.raw.append(
            {
                **sc,
                "shape": [shape[0], shape[1] + 1],
                "times": times,
                "collate_over_processor": over_floor,
                "collate_over_render_processor": over_render,
                "seed_over_collate": vs_seed,
                "labels_agree_with_seed_style": same,
            }
        )
        if k == 0:
            where = f"{sc['batch']} samples, {sc['image']}² image, {sc['turns']} turns"
            ctx.targets.append(
                Target(
                    f"collate / processor alone ({where})",
                    "≤ 1.05×",
                    f"{over_floor:.3f}× ({over_render:.3f}× of render + processor)",
                    over_floor <= 1.05,
                )
            )
            ctx.targets.append(
                Target(
                    f"seed-style collate / collate ({where})",
                    "≥ 1.5×",
                    fmt_ratio(vs_seed),
                    vs_seed >= 1.5,
                )
            )
    agree = all(r["labels_agree_with_seed_style"] for r in table.raw)
    table.notes.append(
        "vlm_collate's input_ids and labels equal the seed-style collate's on this data"
        if agree
        else "vlm_collate's labels differ from the seed-style collate's on this data"
    )
    table.notes.append(
        "tokens: the batch before the shift (one column longer than the returned tensors)."
    )
    return [table]


if __name__ == "__main__":
    import sys

    from .run_all import main

    sys.exit(main(["--only", "end_to_end", *sys.argv[1:]]))
