"""The token view of a batch: what a model is trained on, token by token.

:func:`batch_view` turns an unshifted batch (``shift=False``, so ids and labels
align token by token) into a :class:`BatchView`: per sample, the decoded text
split into pieces that are targets or not, with runs of media placeholder
tokens collapsed into one :class:`MediaSpan`. :func:`render_terminal` prints it
with rich (targets in colour on a terminal, between ``«`` and ``»`` otherwise)
and :func:`render_html` writes it as a self-contained page where hovering a
token shows its id and label.
"""

from __future__ import annotations

import html
import importlib.resources
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.text import Text

from ..engine import IGNORE_INDEX
from ..processor.profile import profile_of
from ..processor.tokens import tokenizer_of
from ..report import BatchReport

IGNORE = IGNORE_INDEX
MEDIA_KINDS = ("image", "video", "audio")
TARGET_OPEN, TARGET_CLOSE = "«", "»"
NEWLINE_MARK = "↵"


@dataclass(frozen=True)
class Piece:
    """Consecutive tokens shown as one piece of text (one token, or the few that
    together decode to a whole character). Its tokens share one target state."""

    ids: tuple[int, ...]
    labels: tuple[int, ...]
    text: str
    special: bool = False

    @property
    def target(self) -> bool:
        return any(label != IGNORE for label in self.labels)


@dataclass(frozen=True)
class MediaSpan:
    """A run of one media placeholder token, shown as a single marker."""

    kind: str
    token_id: int
    count: int
    labels: tuple[int, ...]

    @property
    def target(self) -> bool:
        return any(label != IGNORE for label in self.labels)

    @property
    def marker(self) -> str:
        return f"[{self.kind}: {self.count} token{'s' if self.count != 1 else ''}]"


@dataclass
class SampleView:
    """One kept sample: its pieces and counts. ``index`` is its input index."""

    index: int
    where: str | None
    pieces: list[Piece | MediaSpan]
    tokens: int
    targets: int
    misaligned: int = 0
    truncated: bool = False

    @property
    def media(self) -> list[MediaSpan]:
        return [p for p in self.pieces if isinstance(p, MediaSpan)]


@dataclass
class BatchView:
    """Every sample of a collated batch, the samples the batch dropped, and totals."""

    samples: list[SampleView]
    report: BatchReport
    wheres: list[str | None] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return sum(s.tokens for s in self.samples)

    @property
    def targets(self) -> int:
        return sum(s.targets for s in self.samples)

    @property
    def target_fraction(self) -> float:
        return self.targets / self.tokens if self.tokens else 0.0

    @property
    def zero_target(self) -> list[SampleView]:
        return [s for s in self.samples if s.targets == 0]

    @property
    def dropped(self) -> list[tuple[int, str | None, str]]:
        """``(input index, location, reason)`` of each sample the batch dropped."""
        return [(i, self.where(i), reason) for i, reason in self.report.dropped]

    @property
    def misaligned(self) -> int:
        return sum(s.misaligned for s in self.samples)

    def where(self, index: int) -> str | None:
        return self.wheres[index] if index < len(self.wheres) else None

    def media_counts(self) -> dict[str, tuple[int, int]]:
        """Media kind -> (spans, placeholder tokens), over the kept samples."""
        counts: dict[str, tuple[int, int]] = {}
        for sample in self.samples:
            for span in sample.media:
                spans, tokens = counts.get(span.kind, (0, 0))
                counts[span.kind] = (spans + 1, tokens + span.count)
        return counts


# --------------------------------------------------------------------------- building


def placeholder_kinds(processor: Any) -> dict[int, str]:
    """Token id -> media kind for the tokens the processor repeats for a media item's
    features (read from the processor profile: the one rule)."""
    kinds: dict[int, str] = {}
    for kind, media in profile_of(processor).media.items():
        tid = media.expanded_id if media.expanded_id is not None else media.placeholder_id
        if tid is not None and tid >= 0:
            kinds.setdefault(tid, kind)
    return kinds


def _special_ids(tokenizer: Any) -> set[int]:
    return set(profile_of(tokenizer).special_ids)  # the one rule: the processor profile


def _decode(tokenizer: Any, ids: Sequence[int]) -> str:
    try:
        return tokenizer.decode(
            list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False
        )
    except TypeError:
        return tokenizer.decode(list(ids))


def _text_pieces(
    tokenizer: Any, ids: Sequence[int], labels: Sequence[int], special: set[int]
) -> list[Piece]:
    """Pieces of a run of text tokens; a token that decodes to part of a character
    joins the next ones (up to four) until they decode cleanly."""
    pieces: list[Piece] = []
    pending: list[int] = []
    pending_labels: list[int] = []

    def flush(text: str) -> None:
        is_special = len(pending) == 1 and pending[0] in special
        pieces.append(Piece(tuple(pending), tuple(pending_labels), text, is_special))
        pending.clear()
        pending_labels.clear()

    for tid, label in zip(ids, labels, strict=True):
        if pending and (pending_labels[-1] != IGNORE) != (label != IGNORE):
            flush(_decode(tokenizer, pending))
        pending.append(tid)
        pending_labels.append(label)
        text = _decode(tokenizer, pending)
        if not text.endswith("\ufffd") or len(pending) >= 4:
            flush(text)
    if pending:
        flush(_decode(tokenizer, pending))
    return pieces


def sample_view(
    tokenizer: Any,
    ids: Sequence[int],
    labels: Sequence[int],
    media_kinds: Mapping[int, str],
    special: set[int],
    index: int,
    where: str | None = None,
) -> SampleView:
    """The view of one unpadded row: ``ids`` and ``labels`` aligned token by token."""
    pieces: list[Piece | MediaSpan] = []
    start, n = 0, len(ids)
    while start < n:
        kind = media_kinds.get(ids[start])
        end = start + 1
        if kind is not None:
            while (
                end < n
                and ids[end] == ids[start]
                and (labels[end] != IGNORE) == (labels[start] != IGNORE)
            ):
                end += 1
            pieces.append(MediaSpan(kind, ids[start], end - start, tuple(labels[start:end])))
        else:
            while end < n and ids[end] not in media_kinds:
                end += 1
            pieces.extend(_text_pieces(tokenizer, ids[start:end], labels[start:end], special))
        start = end
    targets = sum(1 for label in labels if label != IGNORE)
    misaligned = sum(
        1 for t, label in zip(ids, labels, strict=True) if label != IGNORE and label != t
    )
    return SampleView(index, where, pieces, n, targets, misaligned)


def batch_view(
    batch: Mapping[str, Any],
    processor: Any,
    wheres: Sequence[str | None] | None = None,
) -> BatchView:
    """The view of an unshifted batch (collated with ``shift=False``).

    ``wheres`` names each input sample's location (``file.jsonl:3``), by input
    index; the batch's ``report`` maps its rows back to input indices.
    """
    report = getattr(batch, "report", None) or BatchReport(samples=len(batch["input_ids"]))
    tokenizer = tokenizer_of(processor)
    kinds = placeholder_kinds(processor)
    special = _special_ids(tokenizer)
    dropped = {i for i, _ in report.dropped}
    kept = [i for i in range(report.samples) if i not in dropped]
    wheres = list(wheres or [])
    ids_rows = batch["input_ids"].tolist()
    label_rows = batch["labels"].tolist()
    mask = batch.get("attention_mask")
    mask_rows = mask.tolist() if mask is not None else [[1] * len(r) for r in ids_rows]
    if len(kept) != len(ids_rows):
        kept = list(range(len(ids_rows)))
    samples = []
    for row, index in enumerate(kept):
        keep = [k for k, m in enumerate(mask_rows[row]) if m]
        ids = [ids_rows[row][k] for k in keep]
        labels = [label_rows[row][k] for k in keep]
        where = wheres[index] if index < len(wheres) else None
        view = sample_view(tokenizer, ids, labels, kinds, special, index, where)
        view.truncated = index in report.truncated
        samples.append(view)
    return BatchView(samples, report, wheres)


# --------------------------------------------------------------------------- terminal

TARGET_STYLE = "bold black on green3"
SPECIAL_STYLE = "cyan"
MEDIA_STYLE = "bold magenta"
TARGET_MEDIA_STYLE = "bold white on red"
HEADER_STYLE = "bold blue"


def _shown(text: str, target: bool) -> str:
    """Text as displayed: a target newline gets a visible mark."""
    return text.replace("\n", NEWLINE_MARK + "\n") if target else text


def _percent(part: int, whole: int) -> str:
    return f"{100 * part / whole:.1f}%" if whole else "0.0%"


def _sample_title(sample: SampleView) -> str:
    parts = [f"sample {sample.index}"]
    if sample.where:
        parts.append(sample.where)
    parts.append(f"{sample.tokens} tokens")
    parts.append(f"{sample.targets} targets ({_percent(sample.targets, sample.tokens)})")
    if sample.truncated:
        parts.append("truncated to max_length")
    return " · ".join(parts)


def sample_text(sample: SampleView, markers: bool) -> Text:
    """The sample's tokens as rich Text: targets styled, and between ``«``/``»``
    when ``markers`` (no colour to show them)."""
    text = Text()
    inside = False
    for piece in sample.pieces:
        if markers and piece.target != inside:
            text.append(TARGET_OPEN if piece.target else TARGET_CLOSE)
            inside = piece.target
        if isinstance(piece, MediaSpan):
            style = TARGET_MEDIA_STYLE if piece.target else MEDIA_STYLE
            text.append(piece.marker, style=style)
        else:
            style = TARGET_STYLE if piece.target else SPECIAL_STYLE if piece.special else None
            text.append(_shown(piece.text, piece.target), style=style)
    if markers and inside:
        text.append(TARGET_CLOSE)
    text.rstrip()
    return text


def summary_rows(view: BatchView) -> list[tuple[str, str]]:
    """Totals as (name, value) rows: samples, target tokens and their fraction,
    samples with zero targets, dropped samples with their reasons, media."""
    report = view.report
    rows = [
        ("samples", f"{report.samples} ({len(view.samples)} in the batch)"),
        ("tokens", f"{view.tokens} (without padding)"),
        ("target tokens", f"{view.targets} ({_percent(view.targets, view.tokens)} of tokens)"),
    ]
    zero = ", ".join(_named(s.index, s.where) for s in view.zero_target)
    rows.append(("zero targets", f"{len(view.zero_target)}" + (f": {zero}" if zero else "")))
    rows.append(("dropped", str(len(view.dropped))))
    rows.extend(("", f"{_named(i, where)}: {reason}") for i, where, reason in view.dropped)
    if report.truncated:
        truncated = ", ".join(_named(i, view.where(i)) for i in report.truncated)
        rows.append(("truncated", truncated))
    media = ", ".join(
        f"{spans} {kind}{'s' if spans != 1 else ''} ({tokens} tokens)"
        for kind, (spans, tokens) in view.media_counts().items()
    )
    rows.append(("media", media or "none"))
    if view.misaligned:
        rows.append(
            (
                "warning",
                f"{view.misaligned} target labels differ from their input ids: "
                "was the batch collated with shift=True?",
            )
        )
    return rows


def summary_text(view: BatchView) -> Text:
    """:func:`summary_rows` as aligned ``name  value`` lines."""
    rows = summary_rows(view)
    width = max(len(name) for name, _ in rows)
    text = Text()
    for k, (name, value) in enumerate(rows):
        text.append(name.ljust(width), style="bold")
        text.append(f"  {value}" + ("\n" if k < len(rows) - 1 else ""))
    return text


def _named(index: int, where: str | None) -> str:
    return f"sample {index} ({where})" if where else f"sample {index}"


def terminal_view(view: BatchView, markers: bool) -> RenderableType:
    """The whole view as one rich renderable."""
    parts: list[RenderableType] = []
    for sample in view.samples:
        parts.append(Text(f"── {_sample_title(sample)} ──", style=HEADER_STYLE))
        parts.append(sample_text(sample, markers))
        parts.append(Text())
    parts.append(Text("── summary ──", style=HEADER_STYLE))
    parts.append(summary_text(view))
    return Group(*parts)


def render_terminal(view: BatchView, console: Console, markers: bool | None = None) -> None:
    """Prints the view; ``markers`` defaults to "no colour on this console"."""
    if markers is None:
        markers = not console.is_terminal or console.color_system is None or console.no_color
    console.print(terminal_view(view, markers), soft_wrap=True, highlight=False)


# --------------------------------------------------------------------------- HTML


def _asset(name: str) -> str:
    """A file of the HTML view (``cli/assets/``), shipped as package data."""
    return (importlib.resources.files(__package__) / "assets" / name).read_text(encoding="utf-8")


def _piece_html(piece: Piece | MediaSpan) -> str:
    classes = []
    if isinstance(piece, MediaSpan):
        classes.append("media")
        ids, body = [piece.token_id] * piece.count, piece.marker
        extra = f' data-kind="{piece.kind}"'
    else:
        classes.append("tok")
        if piece.special:
            classes.append("special")
        ids, body, extra = list(piece.ids), _shown(piece.text, piece.target), ""
    if piece.target:
        classes.append("tgt")
    attributes = (
        f'class="{" ".join(classes)}" data-ids="{json.dumps(ids)}" '
        f'data-labels="{json.dumps(list(piece.labels))}"{extra}'
    )
    return f"<span {attributes}>{html.escape(body)}</span>"


def render_html(view: BatchView, title: str = "vlm-collate inspect") -> str:
    """The view as a self-contained HTML page (inline CSS and script, nothing fetched)."""
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_asset('inspect.css')}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        '<p class="legend"><span class="tok tgt">target</span>'
        '<span class="tok">not a target (label -100)</span>'
        '<span class="tok special">special token</span>'
        '<span class="media">[media: n tokens]</span>'
        "<span>hover a token for its id and label</span></p>",
    ]
    for sample in view.samples:
        out.append(f'<h2 id="sample-{sample.index}">{html.escape(_sample_title(sample))}</h2>')
        body = "".join(_piece_html(p) for p in sample.pieces)
        out.append(f'<pre class="tokens" data-sample="{sample.index}">{body}</pre>')
    out.append("<h2>summary</h2>")
    out.append('<table class="summary">')
    for name, value in summary_rows(view):
        out.append(f"<tr><td>{html.escape(name)}</td><td>{html.escape(value)}</td></tr>")
    out.append("</table>")
    out.append('<div id="tip"></div>')
    out.append(f"<script>{_asset('inspect.js')}</script>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"
