"""Packed against padded batches on a realistic length mix, and rotary positions.

The mix: most conversations short, some medium, a few long (text drawn to exact token
counts), each with 0 to 2 images of several sizes. Padded: ``VLMCollator`` on
consecutive batches of ``batch`` samples. Packed: ``PackedBatchSampler`` batches of
rows of ``max_length`` tokens (lengths from ``LengthEstimator``) through
``PackedCollator``. Rotary positions: the engine (``rope_position_ids``) against
transformers' ``get_rope_index`` of a tiny Qwen2.5-VL model on the same padded batch
(outputs compared).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch

from vlm_collate import LengthEstimator, PackedBatchSampler, PackedCollator, VLMCollator
from vlm_collate.packing.positions import RopeConfig, batch_rope_position_ids

from . import data
from .common import Context, Table, Target, fmt_ratio, fmt_time, measure_all, paired


def steps(settings) -> int:
    return 3


def _mix(tokenizer: Any, n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` conversations: 70% short, 25% medium, 5% long; 0-2 images of 4 sizes."""
    rng = random.Random(seed)
    maker = data.TextMaker(tokenizer, seed=seed)
    out = []
    for i in range(n):
        r = rng.random()
        words = rng.randint(20, 120) if r < 0.7 else rng.randint(200, 600) if r < 0.95 else 1500
        images = [
            {"type": "image", "image": data.image(rng.choice((112, 224, 336, 448)), i * 3 + k)}
            for k in range(rng.choice((0, 1, 1, 2)))
        ]
        question = maker.text(max(4, words // 3))
        out.append(
            {
                "conversation": [
                    {"role": "user", "content": [*images, {"type": "text", "text": question}]},
                    {"role": "assistant", "content": maker.text(words - words // 3)},
                ]
            }
        )
    return out


def _share(batches: list[dict[str, Any]], real: list[int]) -> tuple[float, float, float]:
    slots = [int(b["input_ids"].numel()) for b in batches]
    return 1 - sum(real) / sum(slots), float(np.mean(slots)), float(np.mean(real))


def run(ctx: Context) -> list[Table]:
    s = ctx.settings
    processor = ctx.processor
    n, max_length = (24, 2048) if s.quick else (96, 4096)
    samples = _mix(ctx.tokenizer, n, seed=7)
    lengths = [LengthEstimator(processor)(e) for e in samples]

    ctx.advance("packing: padding share")
    padded = VLMCollator(processor, shift=False)
    packed = PackedCollator(VLMCollator(processor), max_length=max_length, shift=False)
    padded_groups = [list(range(i, min(i + s.batch, n))) for i in range(0, n, s.batch)]
    packed_groups = list(PackedBatchSampler(lengths, max_length, seed=0))
    padded_batches = [padded([samples[i] for i in g]) for g in padded_groups]
    packed_batches = [packed([samples[i] for i in g]) for g in packed_groups]
    real_padded = [int(b["attention_mask"].sum()) for b in padded_batches]
    real_packed = [sum(d[3] for d in b.report.documents) for b in packed_batches]
    assert sum(real_padded) == sum(real_packed) == sum(lengths)
    share = Table(
        "packing",
        f"Packed vs padded: {n} conversations (70% short, 25% medium, 5% long; 0-2 images), "
        f"padded batches of {s.batch}, packed rows of {max_length:,} tokens",
        [
            "layout",
            "batches",
            "rows per batch",
            "tokens per batch (slots)",
            "real tokens per batch",
            "padding share",
        ],
    )
    for name, batches, real in (
        ("padded", padded_batches, real_padded),
        ("packed", packed_batches, real_packed),
    ):
        pad, slots, tokens = _share(batches, real)
        rows = np.mean([b["input_ids"].shape[0] for b in batches])
        share.rows.append(
            [
                name,
                str(len(batches)),
                f"{rows:.1f}",
                f"{slots:,.0f}",
                f"{tokens:,.0f}",
                f"{pad:.1%}",
            ]
        )
        share.raw.append(
            {"layout": name, "batches": len(batches), "padding_share": pad, "slots": slots}
        )
    share.notes.append(
        "Lengths for the sampler come from LengthEstimator (no pixel preprocessing); they equal "
        "the collated lengths on this data (checked). Padding share = 1 - real tokens / slots."
    )

    ctx.advance("packing: collate time")
    groups = {"padded": padded_groups[:3], "packed": packed_groups[:3]}

    def timed(collator, group):
        return lambda: collator([samples[i] for i in group])

    fns = {f"padded {k}": timed(padded, g) for k, g in enumerate(groups["padded"])}
    times = {k: t.median_s for k, t in measure_all(fns, s).items()}
    # The packed batches, and the same samples collated padded, in pairs: the two calls
    # back to back, their order alternating, the ratio the median of the pairs' ratios (a
    # drift in the machine's speed hits both calls of a pair alike).
    repeats = 4 if s.quick else 40
    pairs = {
        k: paired(timed(padded, g), timed(packed, g), s, repeats=repeats)
        for k, g in enumerate(groups["packed"])
    }
    for k, pair in pairs.items():
        times[f"same padded {k}"], times[f"packed {k}"] = pair.first_s, pair.second_s
    same = [pairs[k].second_over_first for k in range(len(groups["packed"]))]
    worst_same = max(same)
    per_1k = Table(
        "packing_time",
        "Collate time per 1,000 real tokens (same samples' processor work included), median",
        [
            "layout",
            "batches timed",
            "time per batch",
            "real tokens per batch",
            "time per 1k tokens",
        ],
    )
    for name, gs in groups.items():
        t = [times[f"{name} {k}"] for k in range(len(gs))]
        tokens = [sum(lengths[i] for i in g) for g in gs]
        per_1k.rows.append(
            [
                name,
                str(len(gs)),
                fmt_time(float(np.mean(t))),
                f"{np.mean(tokens):,.0f}",
                fmt_time(sum(t) / sum(tokens) * 1000),
            ]
        )
        per_1k.raw.append({"layout": name, "times": t, "tokens": tokens})

    same_table = Table(
        "packing_same",
        "Packed against padded on the same samples (each packed batch's samples also "
        "collated padded), calls in alternating pairs; target packed / padded ≤ 1.1×",
        ["batch", "documents", "padded", "packed", "packed / padded", "≤ 1.1×"],
    )
    for k, g in enumerate(packed_groups[:3]):
        ratio = same[k]
        same_table.rows.append(
            [
                str(k),
                str(len(g)),
                fmt_time(times[f"same padded {k}"]),
                fmt_time(times[f"packed {k}"]),
                fmt_ratio(ratio),
                "met" if ratio <= 1.1 else "MISSED",
            ]
        )
        same_table.raw.append({"batch": k, "documents": len(g), "ratio": ratio})
    same_table.notes.append(
        f"padded, packed: median times; packed / padded: the median of the ratios of {repeats} "
        "pairs of calls made back to back, which goes first alternating pair by pair."
    )
    same_table.notes.append(
        "Inside PackedCollator the fast path allocates pixel_values and leaves it unwritten; "
        "the packer writes it with the documents in the packed order of the final lengths, "
        "so packing copies no pixel (the difference is the packed layout: positions, "
        "segment boundaries, gathers of the token-axis tensors)."
    )

    ctx.advance("packing: rotary positions")
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLModel

    from vlm_collate.testing.tiny_models import tiny_qwen_vl_config

    config = Qwen2_5_VLConfig(**tiny_qwen_vl_config(vocab_size=32))
    model = Qwen2_5_VLModel(config).eval()
    rope = RopeConfig.from_model_config(config)
    rope_table = Table(
        "packing_rope",
        "Rotary positions of one padded batch: engine vs transformers' get_rope_index, median",
        ["batch", "tokens (B×L)", "images", "engine", "get_rope_index", "speedup", "equal"],
    )
    for group in (padded_groups[0], list(range(min(n, 2 * s.batch)))):
        batch = padded([samples[i] for i in group])

        def ours(batch=batch):
            return batch_rope_position_ids(batch, rope, text_row=False)

        def theirs(batch=batch):
            return model.get_rope_index(
                batch["input_ids"],
                batch["mm_token_type_ids"],
                batch.get("image_grid_thw"),
                None,
                attention_mask=batch["attention_mask"],
            )[0]

        equal = torch.equal(ours(), theirs())
        t = {
            k: v.median_s
            for k, v in measure_all({"engine": ours, "transformers": theirs}, s).items()
        }
        speedup = t["transformers"] / t["engine"]
        images = 0 if batch.get("image_grid_thw") is None else len(batch["image_grid_thw"])
        rope_table.rows.append(
            [
                str(len(group)),
                "×".join(f"{d:,}" for d in batch["input_ids"].shape),
                str(images),
                fmt_time(t["engine"]),
                fmt_time(t["transformers"]),
                fmt_ratio(speedup),
                "yes" if equal else "NO",
            ]
        )
        rope_table.raw.append({"batch": len(group), "times": t, "speedup": speedup, "equal": equal})
    worst = min(r["speedup"] for r in rope_table.raw)
    ctx.targets.append(
        Target(
            "rotary positions vs get_rope_index (same batch)",
            "≥ 50×",
            fmt_ratio(worst),
            worst >= 50,
        )
    )
    per_1k.notes.append(
        "Packed / padded time on the same samples (each packed batch's samples also "
        f"collated padded): {', '.join(f'{r:.2f}×' for r in same)}."
    )
    ctx.targets.append(
        Target(
            "packed vs padded collate time, same samples",
            "≤ 1.1×",
            fmt_ratio(worst_same),
            worst_same <= 1.1,
        )
    )
    pad_share = {r["layout"]: r["padding_share"] for r in share.raw}
    ctx.targets.append(
        Target(
            "padding share, packed vs padded",
            "lower",
            f"{pad_share['packed']:.1%} vs {pad_share['padded']:.1%}",
            pad_share["packed"] < pad_share["padded"],
        )
    )
    return [share, per_1k, same_table, rope_table]


if __name__ == "__main__":
    import sys

    from .run_all import main

    sys.exit(main(["--only", "packing", *sys.argv[1:]]))
