"""``vlm-collate verify``: a gate to run before a long job.

On a few rows of the user's data it runs the model on the batch padded
(:class:`~vlm_collate.VLMCollator`, Hugging Face style unshifted labels) and packed
(:class:`~vlm_collate.packing.PackedCollator`, the seed's pre-shifted labels, the
model's own rotary config) and checks:

- each document's logits agree between the two layouts (``--atol``/``--rtol``, float32);
- each document's loss agrees (the same tolerances), and so does the batch loss the
  model itself computes from each batch;
- a perfect predictor (logits that put all mass on the next token of ``input_ids``)
  has zero loss under the model's own loss function in each batch's label style: every
  target is the token at its place, nothing is shifted twice or not at all. The last
  column of a pre-shifted row has no next token in the batch; it is predicted from its
  label.

Prints a pass/fail table; the exit code is 1 when a check fails.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

DEFAULT_ROWS = 4
DEFAULT_MAX_LENGTH = 2048
DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-4
PERFECT_LOGIT = 1e4
"""The perfect predictor's logit on the right token (0 elsewhere): its loss is 0 in
float32 exactly where the labels are right."""

MODEL_KEYS = (
    "input_ids",
    "attention_mask",
    "position_ids",
    "pixel_values",
    "image_grid_thw",
    "pixel_values_videos",
    "video_grid_thw",
    "second_per_grid_ts",
    "mm_token_type_ids",
    "cu_seq_lens_q",
    "cu_seq_lens_k",
    "max_length_q",
    "max_length_k",
    "labels",
    "shift_labels",
    "use_cache",
)


@dataclass
class Check:
    """One row of the table: what was compared, the value, the limit, passed or not."""

    name: str
    where: str
    value: float
    limit: float
    passed: bool


# --------------------------------------------------------------------------- model


def load_model(args: argparse.Namespace) -> Any:
    """The model of ``--model DIR`` (float32, eval mode) or, with ``--tiny``, a tiny
    randomly initialised Qwen2.5-VL of the same shape as the built-in processor's."""
    import torch

    if args.tiny:
        from ..testing.tiny_models import tiny_qwen_vl_model

        model = tiny_qwen_vl_model(seed=args.seed)
    else:
        path = Path(args.model)
        if not path.is_dir():
            raise args.cli.CliError(
                f"--model {args.model}: no such folder (a save_pretrained folder)"
            )
        from transformers import AutoModelForImageTextToText

        try:
            model = AutoModelForImageTextToText.from_pretrained(
                str(path), local_files_only=True, dtype=torch.float32
            )
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise args.cli.CliError(f"--model {args.model}: cannot load the model ({err})") from err
    model.config._attn_implementation = args.attention
    for sub in ("text_config", "vision_config"):
        if getattr(model.config, sub, None) is not None:
            getattr(model.config, sub)._attn_implementation = args.attention
    return model.float().eval()


def collators(processor: Any, collate_fn: Any, max_length: int, rope: Any) -> tuple[Any, Any]:
    """The padded collator and the packed one (positions from ``rope``), each with its
    default label style (read back from the batches: ``shift_labels`` means pre-shifted),
    that the check compares."""
    from ..collator import VLMCollator
    from ..packing import PackedCollator

    padded = VLMCollator(processor, collate_fn)
    packed = PackedCollator(VLMCollator(processor, collate_fn), max_length, rope=rope, shift=True)
    return padded, packed


# --------------------------------------------------------------------------- checks


def _forward(model: Any, batch: Any) -> Any:
    import torch

    with torch.no_grad():
        return model(**{k: v for k, v in batch.items() if k in MODEL_KEYS and v is not None})


def _doc_loss(logits: Any, labels: Any) -> tuple[float, int]:
    """Summed cross entropy of ``logits[i]`` against ``labels[i]`` and the target count."""
    import torch

    targets = labels != -100
    if not bool(targets.any()):
        return 0.0, 0
    loss = torch.nn.functional.cross_entropy(
        logits[targets].float(), labels[targets], reduction="sum"
    )
    return float(loss), int(targets.sum())


def _close(a: float, b: float, atol: float, rtol: float) -> tuple[float, float, bool]:
    diff, limit = abs(a - b), atol + rtol * abs(b)
    return diff, limit, diff <= limit


def perfect_loss(model: Any, batch: Any) -> float:
    """The model's loss function on ``batch``'s labels for logits that predict, at each
    position, the next token of ``input_ids`` (the label itself at a row's last column,
    which has no next token in the batch); ids are renumbered to the batch's own small
    vocabulary so the logits stay small."""
    import torch

    ids, labels = batch["input_ids"], batch["labels"]
    shift_labels = batch.get("shift_labels")
    target = torch.roll(ids, -1, dims=1)
    last = labels if shift_labels is not None else ids
    target[:, -1] = torch.where(last[:, -1] != -100, last[:, -1], ids[:, -1])
    vocab = torch.unique(torch.cat([target.flatten(), labels[labels != -100]]))
    wanted = torch.searchsorted(vocab, target)
    relabel = torch.where(labels == -100, -100, torch.searchsorted(vocab, labels.clamp(min=0)))
    logits = torch.zeros((*ids.shape, len(vocab)))
    logits.scatter_(-1, wanted[..., None], PERFECT_LOGIT)
    kwargs: dict[str, Any] = {"vocab_size": len(vocab)}
    if shift_labels is not None:
        kwargs["shift_labels"] = relabel
    return float(model.loss_function(logits=logits, labels=relabel, **kwargs))


def run_checks(
    model: Any,
    padded: Any,
    packed: Any,
    examples: list,
    wheres: list[str],
    atol: float,
    rtol: float,
) -> list[Check]:
    """Every check of ``verify`` on ``examples``."""
    import torch

    checks: list[Check] = []
    pad_batch, pack_batch = padded(examples), packed(examples)
    pad_out, pack_out = _forward(model, pad_batch), _forward(model, pack_batch)
    mask = pad_batch["attention_mask"]
    width = pack_batch["input_ids"].shape[1]
    packed_shifted = pack_batch.get("shift_labels") is not None
    total_pad, total_pack, targets = 0.0, 0.0, 0
    for index, row, start, n in pack_batch.report.documents:
        where = wheres[index]
        n = min(n, width - start)  # a pre-shifted row drops its last column
        columns = torch.nonzero(mask[index]).flatten()[:n]
        a = pack_out.logits[row, start : start + n].float()
        b = pad_out.logits[index, columns].float()
        diff = float((a - b).abs().max()) if n else 0.0
        limit = atol + rtol * float(b.abs().max()) if n else atol
        checks.append(Check("logits: max |packed-padded|", where, diff, limit, diff <= limit))
        doc_labels = pack_batch["labels"][row, start : start + n]
        if packed_shifted:
            pack_sum, pack_n = _doc_loss(a, doc_labels)
        else:
            pack_sum, pack_n = _doc_loss(a[:-1], doc_labels[1:])
        labels = pad_batch["labels"][index, columns]
        pad_sum, pad_n = _doc_loss(b[:-1], labels[1:])
        if pack_n != pad_n:
            checks.append(Check("targets: packed, padded", where, pack_n, pad_n, False))
        pack_loss, pad_loss = pack_sum / max(pack_n, 1), pad_sum / max(pad_n, 1)
        diff, limit, ok = _close(pack_loss, pad_loss, atol, rtol)
        checks.append(Check("loss: |packed-padded|", where, diff, limit, ok and pack_n == pad_n))
        total_pad, total_pack, targets = total_pad + pad_sum, total_pack + pack_sum, targets + pad_n
    diff, limit, ok = _close(float(pack_out.loss), float(pad_out.loss), atol, rtol)
    checks.append(Check("model loss: |packed-padded|", "batch", diff, limit, ok))
    mean = total_pad / max(targets, 1)
    diff, limit, ok = _close(float(pad_out.loss), mean, atol, rtol)
    checks.append(Check("model loss vs documents", "padded batch", diff, limit, ok))
    for layout, batch in (("padded", pad_batch), ("packed", pack_batch)):
        shifted = batch.get("shift_labels") is not None
        name = f"{layout} ({'pre-shifted' if shifted else 'unshifted'})"
        loss = perfect_loss(model, batch)
        checks.append(Check("perfect predictor loss", name, loss, 1e-6, loss <= 1e-6))
    return checks


def checks_table(checks: list[Check]) -> Table:
    table = Table(title="vlm-collate verify: packed vs padded, label style")
    for column in ("check", "where", "value", "tolerance", "result"):
        table.add_column(column, justify="right" if column in ("value", "tolerance") else "left")
    for c in checks:
        result = "[green]pass[/green]" if c.passed else "[bold red]FAIL[/bold red]"
        table.add_row(c.name, c.where, f"{c.value:.3g}", f"{c.limit:.3g}", result)
    return table


# --------------------------------------------------------------------------- command


def run_verify(args: argparse.Namespace) -> int:
    """The command; ``args.cli`` is the ``commands`` module (its shared steps: processors,
    collate functions, the console; passed in, so that the two modules import nothing
    of each other's in a cycle)."""
    from .datafiles import read_records, sample_data_path

    cli = args.cli
    CliError, _stdout_console = cli.CliError, cli._stdout_console
    saved_processor, builtin_processor = cli.saved_processor, cli.builtin_processor

    console = _stdout_console(args.color)
    status = Console(stderr=True)
    if args.rows < 1:
        raise CliError("--rows must be 1 or more")
    data = args.data or str(sample_data_path())
    records = read_records(data, limit=args.rows, label=None if args.data else "sample.jsonl")
    if args.processor:
        processor = saved_processor(args.processor)
    elif args.model and not args.tiny:
        processor = saved_processor(args.model)
    else:
        processor = builtin_processor(status)
    collate_fn = cli.collate_fn_named(args.family, processor)
    with status.status("building the model"):
        model = load_model(args)
    padded, packed = collators(processor, collate_fn, args.max_length, model.config)
    with status.status(f"running the model on {len(records)} rows, padded and packed"):
        checks = run_checks(
            model,
            padded,
            packed,
            [r.example for r in records],
            [r.where for r in records],
            args.atol,
            args.rtol,
        )
    console.print(
        f"{data}: {len(records)} rows · {type(model).__name__} "
        f"({'tiny, random weights' if args.tiny else args.model}) · {collate_fn.__name__} · "
        f"attention {args.attention}",
        soft_wrap=True,
    )
    console.print(checks_table(checks))
    failed = [c for c in checks if not c.passed]
    if failed:
        console.print(f"[bold red]FAIL[/bold red]: {len(failed)} of {len(checks)} checks failed")
        return 1
    console.print(f"[green]pass[/green]: all {len(checks)} checks")
    return 0


def add_parser(commands: Any, color: argparse.ArgumentParser, formatter: Any, cli: Any) -> None:
    """Registers ``verify`` on the ``vlm-collate`` subparsers; ``cli``: the ``commands``
    module (its ``_examples`` epilog and shared steps)."""
    _examples = cli._examples
    verify = commands.add_parser(
        "verify",
        parents=[color],
        help="check that packed and padded batches train the model the same (a CI gate)",
        description="Run the model on a few rows of DATA collated padded (VLMCollator, "
        "unshifted labels) and packed (PackedCollator, pre-shifted labels, the model's "
        "rotary config), and check that each document's logits and loss agree, that the "
        "model's own batch loss agrees, and that a perfect predictor of the next token has "
        "zero loss in each batch's label style. Prints a pass/fail table; exit code 1 when "
        "a check fails. Runs on the CPU in float32, offline.",
        epilog=_examples(
            "vlm-collate verify --tiny                        the shipped sample, a tiny model",
            "vlm-collate verify data.jsonl --model my_model/  your rows, your weights",
            "vlm-collate verify data.jsonl --model my_model/ --rows 8 --atol 1e-3",
        ),
        formatter_class=formatter,
    )
    verify.add_argument(
        "data",
        nargs="?",
        metavar="DATA",
        help="a JSON Lines file of {'conversation': [...]} examples, or a folder saved by "
        "datasets' save_to_disk (default: the sample data shipped in the package)",
    )
    which = verify.add_mutually_exclusive_group(required=True)
    which.add_argument(
        "--model",
        metavar="DIR",
        help="a model folder written by save_pretrained (loaded offline with "
        "AutoModelForImageTextToText, float32); its processor is read from DIR unless "
        "--processor is given",
    )
    which.add_argument(
        "--tiny",
        action="store_true",
        help="a tiny randomly initialised Qwen2.5-VL (vlm_collate.testing.tiny_models) for "
        "the built-in processor, instead of weights",
    )
    verify.add_argument(
        "--processor",
        metavar="DIR",
        help="a processor folder written by save_pretrained (default: the --model folder, "
        "or the built-in offline Qwen2.5-VL processor with --tiny)",
    )
    verify.add_argument(
        "--family",
        metavar="NAME",
        help="collate function: a key of COLLATE_FNS "
        "(default: the one registered for the processor's class)",
    )
    verify.add_argument(
        "--rows",
        type=int,
        default=DEFAULT_ROWS,
        metavar="N",
        help=f"check the first N rows of DATA (default {DEFAULT_ROWS})",
    )
    verify.add_argument(
        "--max-length",
        type=int,
        default=DEFAULT_MAX_LENGTH,
        metavar="N",
        help=f"the packed rows' length in tokens (default {DEFAULT_MAX_LENGTH}); a longer "
        "row is an error",
    )
    verify.add_argument(
        "--atol",
        type=float,
        default=DEFAULT_ATOL,
        help=f"absolute tolerance of the logits and loss comparisons (default {DEFAULT_ATOL})",
    )
    verify.add_argument(
        "--rtol",
        type=float,
        default=DEFAULT_RTOL,
        help=f"relative tolerance of the logits and loss comparisons (default {DEFAULT_RTOL}); "
        "a value passes when |packed - padded| <= atol + rtol * |padded|",
    )
    verify.add_argument(
        "--attention",
        choices=("sdpa", "eager"),
        default="sdpa",
        help="the attention implementation to run (default sdpa; packed rows are masked "
        "per document from position_ids)",
    )
    verify.add_argument(
        "--seed", type=int, default=0, help="the seed of --tiny's random weights (default 0)"
    )
    verify.set_defaults(run=run_verify, cli=cli)
