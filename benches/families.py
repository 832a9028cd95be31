"""Every family at its model's published preprocessing sizes: ``VLMCollator`` against the
processor alone, on one core (``os.sched_setaffinity`` to one CPU and one torch thread,
for both sides, as in a DataLoader worker) and on every core, with images decoded in
memory and as JPEG files on disk.

The offline test processors (``vlm_collate.testing.families``) shrink image sizes; here
each is built with the published sizes (:data:`PUBLISHED`), so the pixels cost what they
cost users. The samples: 8 conversations, one 448² image each, two exchanges of about
100 words. The processor alone gets the texts already rendered and the images (decoded
by PIL inside the timed call for the JPEG case, as a dataset's loader would); the collate
gets the rows (images, or file paths).

    python -m benches.families [--quick] [--only FAMILY ...]   # writes the families block
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from vlm_collate import VLMCollator
from vlm_collate.formats.conversation import with_list_content
from vlm_collate.testing import families, qwen2_5_vl_processor

from . import data
from .common import Settings, Table, Target, fmt_ratio, fmt_time, machine, measure_all

PUBLISHED: dict[str, tuple[Callable[..., Any], dict[str, Any], str]] = {
    "qwen2_5_vl": (qwen2_5_vl_processor, {"min_pixels": 3136, "max_pixels": 12_845_056}, ""),
    "qwen3_vl": (families.qwen3_vl_processor, {"min_pixels": 65_536, "max_pixels": 16_777_216}, ""),
    "glm4v": (families.glm4v_processor, {"min_pixels": 12_544, "max_pixels": 9_633_792}, ""),
    "gemma3": (families.gemma3_processor, {"image_size": 896}, ""),
    "mllama": (families.mllama_processor, {"tile_size": 560}, "tiles of 560², up to 4"),
    "llama4": (families.llama4_processor, {"tile_size": 336, "max_patches": 16}, "up to 16"),
    "pixtral": (families.pixtral_processor, {"longest_edge": 1024}, ""),
    "internvl": (families.internvl_processor, {"max_patches": 12}, "448² tiles"),
    "llava_onevision": (families.llava_onevision_processor, {}, "384² any-resolution"),
    "idefics3": (families.idefics3_processor, {}, "test builder's sizes"),
    "smolvlm": (families.smolvlm_processor, {}, "test builder's sizes"),
}
"""Family -> (builder, the published sizes as its keyword arguments, a note)."""
QUICK = ("qwen2_5_vl", "gemma3")
FAST_PATH = ("qwen2_5_vl", "qwen3_vl")
"""Families on the fast path when this was written (the others call their processor)."""


@contextmanager
def one_core() -> Iterator[None]:
    """This process on its first allowed CPU with one torch thread, restored after."""
    cpus, threads = os.sched_getaffinity(0), torch.get_num_threads()
    os.sched_setaffinity(0, {min(cpus)})
    torch.set_num_threads(1)
    try:
        yield
    finally:
        os.sched_setaffinity(0, cpus)
        torch.set_num_threads(threads)


def examples_for(processor: Any, folder: Path, n: int = 8) -> tuple[list, list]:
    """``n`` rows with a decoded 448² image, and the same rows with a JPEG file path."""
    maker = data.TextMaker(processor.tokenizer, seed=0)
    decoded, files = [], []
    for i in range(n):
        conversation = maker.conversation(260, 2)
        image = data.image(448, i)
        path = folder / f"{i}.jpg"
        image.save(path, quality=90)
        for rows, value in ((decoded, image), (files, str(path))):
            first = dict(conversation[0])
            first["content"] = [
                {"type": "image", "image": value},
                {"type": "text", "text": first["content"]},
            ]
            rows.append({"conversation": [first, *conversation[1:]]})
    return decoded, files


def methods(processor: Any, decoded: list, files: list) -> dict[str, Callable[[], Any]]:
    collator = VLMCollator(processor)
    texts = [
        processor.apply_chat_template(with_list_content(e["conversation"]), tokenize=False)
        for e in decoded
    ]
    images = [[e["conversation"][0]["content"][0]["image"]] for e in decoded]
    paths = [[e["conversation"][0]["content"][0]["image"]] for e in files]

    def call(batch_images):
        return processor(
            text=texts, images=batch_images, padding=True, padding_side="right", return_tensors="pt"
        )

    return {
        "processor, decoded": lambda: call(images),
        "collate, decoded": lambda: collator(decoded),
        "processor, JPEG": lambda: call([[Image.open(p).convert("RGB") for p in s] for s in paths]),
        "collate, JPEG": lambda: collator(files),
    }


def run(settings: Settings, names: list[str]) -> tuple[Table, list[Target]]:
    table = Table(
        "families",
        "Every family at its published preprocessing sizes: processor time / collate time "
        "(higher is better; 8 samples, one 448² image, two ~100-word exchanges)",
        [
            "family",
            "sizes",
            "fast path",
            "collate (1 core)",
            "× (1 core, decoded)",
            "× (1 core, JPEG)",
            "× (all cores, decoded)",
            "× (all cores, JPEG)",
        ],
    )
    targets = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            builder, kwargs, note = PUBLISHED[name]
            processor = builder(**kwargs)
            folder = Path(tmp) / name
            folder.mkdir()
            fns = methods(processor, *examples_for(processor, folder))
            with one_core():
                single = {k: t.median_s for k, t in measure_all(fns, settings).items()}
            every = {k: t.median_s for k, t in measure_all(fns, settings).items()}

            def ratio(times, kind):
                return times[f"processor, {kind}"] / times[f"collate, {kind}"]

            cells = [ratio(t, k) for t in (single, every) for k in ("decoded", "JPEG")]
            sizes = ", ".join(f"{k}={v:,}" for k, v in kwargs.items()) or "defaults"
            table.rows.append(
                [
                    name,
                    sizes + (f" ({note})" if note else ""),
                    "yes" if name in FAST_PATH else "no (processor call)",
                    fmt_time(single["collate, decoded"]),
                    *[fmt_ratio(c) for c in cells],
                ]
            )
            table.raw.append({"family": name, "sizes": kwargs, "one_core": single, "all": every})
            goal = 2.5 if name.startswith("qwen") else 2.0
            targets.append(
                Target(
                    f"{name}: processor / collate on one core (decoded images)",
                    f"≥ {goal}×",
                    fmt_ratio(cells[0]),
                    cells[0] >= goal,
                )
            )
    table.notes.append(
        "Families not on the fast path call their processor and run at about its speed "
        "(×≈1.0): their targets are not met until they get a fast path."
    )
    return table, targets


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benches.families")
    parser.add_argument("--quick", action="store_true", help="two families, few repeats")
    parser.add_argument("--only", action="append", choices=sorted(PUBLISHED))
    parser.add_argument("--docs", type=Path, default=None, help="docs folder to write into")
    args = parser.parse_args(argv)
    names = args.only or (list(QUICK) if args.quick else list(PUBLISHED))
    table, targets = run(Settings(quick=args.quick), names)
    lines = [f"Run of {machine()['date']} ({'quick' if args.quick else 'full'}).", ""]
    lines.append(table.markdown())
    lines += ["| target | goal | measured | met |", "|---|---|---|---|"]
    lines += [
        f"| {t.name} | {t.goal} | {t.measured} | {'yes' if t.met else 'no'} |" for t in targets
    ]
    text = "\n".join(lines)
    print(text)
    if args.docs is not None or not (args.quick or args.only):
        from .readme import write_block

        docs = args.docs or Path(__file__).resolve().parents[1] / "docs"
        print("wrote", write_block(docs, "families", text))
    return 0


if __name__ == "__main__":
    sys.exit(main())
