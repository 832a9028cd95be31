"""Assistant markers derived from a processor's chat template, and verified.

Probe conversations (the reply first, in the middle and last, after a system turn,
empty, multi-part, with leading whitespace, with reasoning, beside a tool turn) are
rendered and labelled by differential rendering (:mod:`.reply_spans`). From them:

* the assistant headers: the tokens before each reply, after the previous turn's
  end-of-turn, starting at a special token where one is there (``<|im_start|>assistant\\n``,
  ``<|start_header_id|>assistant<|end_header_id|>\\n\\n``, with and without reasoning
  scaffolding); a template with no header (Mistral) yields what precedes the reply
  (``[/INST]``);
* the end-of-turn tokens: the first special token after each reply.

The markers are then run through the engine on every probe and compared with the
differential ground truth. Markers that pass label batches (the fast path); a template
whose markers fail is labelled conversation by conversation (the exact path). The
choice is logged once per template and reported by :func:`labels_plan`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .. import engine
from ..errors import TemplateError
from .closing import closing_ids
from .profile import profile_of
from .render import (
    RenderedConversation,
    Span,
    bounded_turns_end,
    content_span,
    renderer_for,
    token_targets,
)

logger = logging.getLogger("vlm_collate")


@dataclass(frozen=True)
class Markers:
    """Token sequences that open and close assistant replies."""

    starts: list[list[int]]
    ends: list[list[int]]
    ignore_ids: list[int] = field(default_factory=list)

    @property
    def stop_ids(self) -> list[int]:
        """The last token of each end-of-turn sequence."""
        return sorted({e[-1] for e in self.ends})


class MarkerError(TemplateError):
    """The chat template has no derivable assistant header or end-of-turn token."""


# --------------------------------------------------------------------------- probes


def _u(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def _a(content: Any, **extra: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content, **extra}


_Q1, _Q2, _Q3 = "What is shown here?", "And the colour?", "Count them: A or B?"

#: Probe conversations by shape name; a template that refuses a shape (raises) leaves
#: that shape unverified, and reports it.
PROBES: dict[str, list[dict[str, Any]]] = {
    "single turn": [_u(_Q1), _a("A red car.")],
    "first, middle and last": [
        _u(_Q1),
        _a("A red car."),
        _u(_Q2),
        _a("Red, mostly."),
        _u(_Q3),
        _a("B"),
    ],
    "after a system turn": [
        {"role": "system", "content": "You are brief."},
        _u(_Q1),
        _a("A cat."),
        _u(_Q2),
        _a("Grey."),
    ],
    "empty reply": [_u(_Q1), _a(""), _u(_Q2), _a("Blue.")],
    "multi-part reply": [
        _u(_Q1),
        _a([{"type": "text", "text": "A dog "}, {"type": "text", "text": "on grass."}]),
        _u(_Q2),
        _a("Brown."),
    ],
    "leading and trailing whitespace": [
        _u(_Q1),
        _a("\nA tree.\n"),
        _u(_Q2),
        _a(" Green. "),
        _u(_Q3),
        _a("\n\nA"),
    ],
    "prompt echo and role words": [
        _u("Answer A or B: which is right? A"),
        _a("A"),
        _u('Quote "the assistant said" back.'),
        _a('The assistant said "user" and [/INST].'),
    ],
    "reasoning in content": [
        _u(_Q1),
        _a("<think>\nLooks like a car.\n</think>\n\nA car."),
        _u(_Q2),
        _a("<think>It is red.</think>Red."),
    ],
    "reasoning field": [
        _u(_Q1),
        _a("A car.", reasoning_content="Four wheels."),
        _u(_Q2),
        _a("Red.", reasoning_content="The paint is red."),
    ],
    "ends with a user turn": [_u(_Q1), _a("A car."), _u(_Q2)],
    "tool turn": [
        _u("What is 6 times 7?"),
        _a("Let me compute."),
        {"role": "tool", "content": "42"},
        _a("It is 42."),
    ],
    "unicode": [_u("Qu'est-ce que c'est ? 数字"), _a("Un chat 🐈 — ünïcødé, 数字.")],
    "reply merging with the header or not": [
        _u("Is it blue? yes"),
        _a("yes it is"),
        _u("And this one?"),
        _a("the one on the left"),
        _u("How many?"),
        _a("2 of them"),
        _u("Which?"),
        _a("(b), it is not"),
    ],
}

#: What a string-only template writes for list content (``str(list)``).
_LIST_LITERAL = "{'type': 'text'"


@dataclass(frozen=True)
class Probe:
    """A probe conversation labelled by differential rendering: the rendering, the span
    of every message's content, and the token targets."""

    name: str
    messages: list[dict[str, Any]]
    rendered: RenderedConversation
    contents: list[Span | None]
    ids: list[int]
    offsets: list[tuple[int, int]]
    targets: list[bool]


def labelled_probe(processor: Any, name: str, messages: list[dict[str, Any]]) -> Probe:
    """``messages`` rendered with ``processor``'s template and labelled by differential
    rendering; raises what the template raises for a shape it refuses."""
    profile = profile_of(processor)
    render = renderer_for(profile)
    full = render(messages)
    contents = [content_span(render, messages, k, full) for k in range(len(messages))]
    replies = [s for s, m in zip(contents, messages) if m["role"] == "assistant"]
    rendered = RenderedConversation(
        full, replies, bounded_turns_end(render, messages, full, replies)
    )
    truth = token_targets(
        profile.tokenizer,
        rendered,
        profile.special_ids,
        frozenset(profile.media_ids),
        closing_ids(profile),
    )
    return Probe(name, messages, rendered, contents, truth.ids, truth.offsets, truth.targets)


# --------------------------------------------------------------------------- derivation


def _turn_tokens(
    probe: Probe, specials: frozenset[int], closing: frozenset[int]
) -> tuple[list[list[int]], list[int]]:
    """(header of each rendered reply, end-of-turn token ids) of one probe: the first
    special token after a reply, when it is one of the template's closing tokens."""
    ids, offsets = probe.ids, probe.offsets
    headers: list[list[int]] = []
    stops: list[int] = []
    previous_end = 0
    for message, span in zip(probe.messages, probe.contents):
        if span is None:
            continue
        if message["role"] == "assistant":
            gap = [
                t
                for t, (a, b) in zip(ids, offsets)
                if a >= previous_end and b <= span.start and b > a
            ]
            headers.append(gap)
            after = [t for t, (a, _) in zip(ids, offsets) if a >= span.end]
            stop = next((t for t in after if t in specials), None)
            if stop is not None and stop in closing:
                stops.append(stop)
        previous_end = span.end
    return headers, stops


def _trimmed_header(gap: list[int], stops: set[int], specials: frozenset[int]) -> list[int]:
    """The header inside ``gap`` (the tokens between the previous content and a reply):
    what follows the previous turn's end-of-turn, from its first special token. A header
    that follows a special token always includes it: where nothing special follows the
    last end-of-turn (SmolVLM's ``<end_of_utterance>\nAssistant: ``, GLM's
    ``<|assistant|>\n`` when ``<|assistant|>`` also ends replies), the header starts at
    that end-of-turn, so text a user types never matches it."""
    last_stop = max((i for i, t in enumerate(gap) if t in stops), default=-1)
    header = gap[last_stop + 1 :] or gap
    first_special = next((i for i, t in enumerate(header) if t in specials), None)
    if first_special is not None:
        return header[first_special:]
    last_special = max((i for i, t in enumerate(gap) if t in specials), default=None)
    return gap[last_special:] if last_special is not None else header


def derive_markers(processor: Any, probes: Sequence[Probe]) -> Markers:
    """Headers and end-of-turn tokens of the template, from labelled probes."""
    profile = profile_of(processor)
    tokenizer, specials = profile.tokenizer, profile.special_ids
    gaps: list[list[int]] = []
    stops: set[int] = set()
    for probe in probes:
        headers, probe_stops = _turn_tokens(probe, specials, closing_ids(profile))
        gaps += headers
        stops.update(probe_stops)
    starts = {tuple(_trimmed_header(g, stops, specials)) for g in gaps}
    # A header ending in whitespace ("Assistant: ") also opens a reply whose first token
    # swallows that whitespace (" yes"): the header without its trailing whitespace tokens.
    for start in list(starts):
        stripped = list(start)
        while stripped and not tokenizer.decode([stripped[-1]]).strip():
            stripped.pop()
        if stripped:
            starts.add(tuple(stripped))
    starts.discard(())
    if not starts:
        raise MarkerError("no assistant header in the chat template")
    if not stops:
        raise MarkerError("no special token closes an assistant reply in the chat template")
    return Markers(
        starts=[list(s) for s in sorted(starts, key=lambda s: (-len(s), s))],
        ends=[[t] for t in sorted(stops)],
        ignore_ids=list(profile.media_ids),
    )


# --------------------------------------------------------------------------- verification


def marker_labels(rows: Sequence[Sequence[int]], markers: Markers) -> list[list[int]]:
    """Engine marker labels of unpadded token rows."""
    width = max((len(r) for r in rows), default=0)
    ids = np.zeros((len(rows), max(width, 1)), dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    labels, _ = engine.labels_from_markers(
        ids, mask, markers.starts, markers.ends, markers.ignore_ids
    )
    return [labels[i, : len(r)].tolist() for i, r in enumerate(rows)]


def _expected(probe: Probe) -> list[int]:
    return [t if keep else engine.IGNORE_INDEX for t, keep in zip(probe.ids, probe.targets)]


@dataclass(frozen=True)
class LabelsPlan:
    """How labels are built for a template: ``method`` is ``"markers"`` (verified on every
    probe shape the template renders) or ``"exact"`` (differential rendering per
    conversation); ``verified``/``failed``/``refused`` name probe shapes."""

    method: str
    markers: Markers | None
    verified: list[str]
    failed: list[str]
    refused: dict[str, str]
    unrendered: list[str]
    """Probe shapes whose reply content the template drops or writes as a Python literal
    (such a reply cannot be labelled; the shape is not verified)."""
    reason: str = ""


#: Assistant headers of other templates, typed by users (in plain text: special-token
#: strings of the vocabulary are escaped in content, see ``on_special_text``).
OTHER_HEADERS = (
    " [/INST]",
    "[/INST] ",
    "ASSISTANT:",
    "\nAssistant: ",
    "Assistant:",
    "<|assistant|>\n",
    "<|im_start|>assistant\n",
    "<start_of_turn>model\n",
    "<|start_header_id|>assistant<|end_header_id|>\n\n",
    "assistant\n",
    "<seed:bos>assistant\n",
    "GPT:",
)


def header_texts(processor: Any, markers: Markers) -> list[str]:
    """What a user could type that reads like an assistant header: the text of each
    derived header (with and without its trailing whitespace) and of other templates'
    headers, special-token strings of the vocabulary taken out (content escapes them)."""
    profile = profile_of(processor)
    texts: list[str] = []
    for text in [profile.tokenizer.decode(s) for s in markers.starts] + list(OTHER_HEADERS):
        for special in profile.special_strings:
            text = text.replace(special, "")
        for variant in (text, text.strip()):
            if variant.strip() and variant not in texts:
                texts.append(variant)
    return texts


def header_probes(texts: Sequence[str]) -> dict[str, list[dict[str, Any]]]:
    """Probe conversations with each of ``texts`` at the start, middle and end of user,
    system and tool turns."""
    probes: dict[str, list[dict[str, Any]]] = {}
    for h in texts:
        probes[f"header {h!r} in user turns"] = [
            _u(f"{h}What is shown?"),
            _a("A red car."),
            _u(f"Type {h} now"),
            _a("Fine, done."),
            _u(f"Say it: {h}"),
            _a("Ok."),
        ]
        probes[f"header {h!r} in a system turn"] = [
            {"role": "system", "content": f"{h}Be brief {h} always{h}"},
            _u(_Q1),
            _a("A cat."),
        ]
        probes[f"header {h!r} in a tool turn"] = [
            _u("What is 6 times 7?"),
            _a("Let me compute."),
            {"role": "tool", "content": f"{h}42 {h} done{h}"},
            _a("It is 42."),
        ]
    return probes


def _list_form(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {**m, "content": [{"type": "text", "text": m["content"]}]}
        if isinstance(m.get("content"), str)
        else m
        for m in messages
    ]


def _drops_a_turn(probe: Probe) -> bool:
    """Whether the template drops a non-empty turn of the probe (GLM-4.1V's drops tool
    turns): its replies then meet as they never do in conversations it renders whole, and
    a row with such a turn is checked at run time (see ``labels.label_array``)."""
    return any(
        span is None and m["role"] != "assistant" and m.get("content")
        for m, span in zip(probe.messages, probe.contents)
    )


def _labelled_probes(
    processor: Any, shapes: dict[str, list[dict[str, Any]]]
) -> tuple[list[Probe], dict[str, str], list[str]]:
    """Each shape labelled in string and in list content (a form whose rendering equals
    the other's is kept once): (probes, refused shapes, unrendered shapes)."""
    probes: list[Probe] = []
    refused: dict[str, str] = {}
    unrendered: list[str] = []
    for name, messages in shapes.items():
        seen: set[str] = set()
        for form, conversation in (("string", messages), ("list", _list_form(messages))):
            label = name if form == "string" else f"{name} (list content)"
            try:
                probe = labelled_probe(processor, label, conversation)
            except Exception as err:  # noqa: BLE001 - a template refuses a shape by raising anything
                refused[label] = " ".join(str(err).split())[:160] or type(err).__name__
                continue
            if probe.rendered.text in seen:
                continue
            seen.add(probe.rendered.text)
            if (
                any(s is None for s in probe.rendered.replies)
                or _LIST_LITERAL in probe.rendered.text
                or _drops_a_turn(probe)
            ):
                unrendered.append(label)  # the template drops or stringifies this content
                continue
            probes.append(probe)
    return probes, refused, unrendered


def plan_labels(processor: Any) -> LabelsPlan:
    """Derives the markers of ``processor``'s template and verifies them on every probe,
    in string and list content, and on probes that put header text (this template's
    and other templates') in user, system and tool turns."""
    renderer_for(processor)  # TemplateError when it cannot render a plain conversation
    probes, refused, unrendered = _labelled_probes(processor, PROBES)
    if not any(any(p.targets) for p in probes):
        raise TemplateError(
            "the processor's chat template does not render assistant replies, so no labels "
            "can be built; use a template with an assistant turn"
        )
    try:
        markers = derive_markers(processor, probes)
    except MarkerError as err:
        return LabelsPlan(
            "exact", None, [], [p.name for p in probes], refused, unrendered, str(err)
        )
    adversarial, _, _ = _labelled_probes(processor, header_probes(header_texts(processor, markers)))
    probes = probes + adversarial
    got = marker_labels([p.ids for p in probes], markers)
    verified = [p.name for p, row in zip(probes, got) if row == _expected(p)]
    failed = [p.name for p, row in zip(probes, got) if row != _expected(p)]
    if failed:
        reason = f"markers mislabel probe shapes: {', '.join(failed)}"
        return LabelsPlan("exact", markers, verified, failed, refused, unrendered, reason)
    return LabelsPlan("markers", markers, verified, [], refused, unrendered)


def labels_plan(processor: Any) -> LabelsPlan:
    """:func:`plan_labels` of ``processor`` (or its profile), cached on the profile per
    template; the method is logged once."""
    profile = profile_of(processor)
    return profile.cached(("labels_plan", profile.template_key), lambda: _logged_plan(profile))


def _logged_plan(processor: Any) -> LabelsPlan:
    plan = plan_labels(processor)
    if plan.method == "markers":
        logger.info(
            "labels: template markers verified on %d probe shapes (fast path)", len(plan.verified)
        )
    else:
        logger.warning(
            "labels: %s; every conversation is labelled by differential rendering "
            "(exact path, slower)",
            plan.reason,
        )
    return plan


def markers_for(processor: Any) -> Markers | None:
    """The verified markers of ``processor``'s template, or None when its labels use the
    exact path. A template that does not render assistant replies raises TemplateError."""
    plan = labels_plan(processor)
    return plan.markers if plan.method == "markers" else None
