"""What closes a template's assistant replies: its closing tokens, and whether the last
reply of a conversation gets one from the template or from the collators.

**Closing tokens.** The special tokens a template writes right after a non-empty reply
(``<|im_end|>``, ``<|eot_id|>``, ``<seed:eos>``; for a template with no closing token of
its own, the next turn's opening special token: GLM's ``<|user|>``, ``<|observation|>``),
read from probe conversations by differential rendering. A reply's end-of-turn target is
one of them, never another special token: a reply the template renders without its
closing token (Seed-OSS writes nothing after an empty reply) takes nothing from the next
turn (``<seed:bos>`` opens every turn and stops nothing).

**The last reply.** A template closes its replies when every probe's last reply is
followed by a closing token; else the collators append the model's stop token (the
tokenizer's eos, or the id ``close_last_reply`` names) and label it
(:mod:`vlm_collate.pipeline.loss_policies`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .profile import ProcessorProfile, profile_of
from .render import (
    RenderedConversation,
    bounded_turns_end,
    content_span,
    renderer_for,
    token_targets,
)

__all__ = ["ReplyClosing", "closing_ids", "reply_closing"]


def _u(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def _a(text: str) -> dict[str, Any]:
    return {"role": "assistant", "content": text}


#: Conversations whose non-empty replies show every closing token: a reply alone, one
#: another user turn follows, one a tool turn follows, one after a system turn.
_PROBES = (
    [_u("What is shown here?"), _a("A car.")],
    [_u("What is shown here?"), _a("A car."), _u("And the colour?"), _a("Red.")],
    [
        _u("What is 6 times 7?"),
        _a("Let me compute."),
        {"role": "tool", "content": "42"},
        _a("It is 42."),
    ],  # fmt: skip
    [
        {"role": "system", "content": "You are brief."},
        _u("Hi"),
        _a("Hello."),
        _u("Bye"),
        _a("Bye."),
    ],  # fmt: skip
)


@dataclass(frozen=True)
class _Reading:
    closing: frozenset[int]
    closes_last: bool


def _read(profile: ProcessorProfile) -> _Reading:
    render = renderer_for(profile)
    specials = profile.special_ids
    closing: set[int] = set()
    closes_last = True
    for probe in _PROBES:
        try:
            full = render(probe)
        except Exception:  # noqa: BLE001 - a template may refuse a role (tool, system)
            continue
        contents = [content_span(render, probe, k, full) for k in range(len(probe))]
        if any(s is None and m["role"] != "assistant" for s, m in zip(contents, probe)):
            continue  # a turn the template drops (GLM-4.1V's tool turns): replies meet
        spans = [s for s, m in zip(contents, probe) if m["role"] == "assistant"]
        kept = [s for s in spans if s is not None]
        if not kept:
            continue
        rendered = RenderedConversation(full, spans, bounded_turns_end(render, probe, full, kept))
        truth = token_targets(profile.tokenizer, rendered, specials, frozenset(profile.media_ids))
        for n, turn in enumerate(truth.turns):
            stop = None
            if turn is not None and turn[1] > turn[0]:
                last = turn[1] - 1
                if truth.ids[last] in specials and truth.offsets[last][0] >= spans[n].end:
                    stop = truth.ids[last]
            if stop is not None:
                closing.add(stop)
            elif n == len(truth.turns) - 1 and spans[n] is not None:
                closes_last = False
    return _Reading(frozenset(closing), closes_last and bool(closing))


def _reading(processor: Any) -> _Reading:
    profile = profile_of(processor)
    return profile.cached(("closing", profile.template_key), lambda: _read(profile))


def closing_ids(processor: Any) -> frozenset[int]:
    """The special tokens ``processor``'s template writes right after a reply (the only
    tokens an end-of-turn target may end with); cached on the profile per template."""
    return _reading(processor).closing


@dataclass(frozen=True)
class ReplyClosing:
    """What a template's replies end with. ``closes``: the template writes a closing token
    after every reply, the last included (``<|im_end|>``); else ``stop_id``/``stop_text``
    is the stop token appended after the last reply (None when the tokenizer has no eos).
    ``closing``: the closing tokens as text (what ends a reply another turn follows)."""

    closes: bool
    stop_id: int | None
    stop_text: str | None
    closing: tuple[str, ...] = ()

    def describe(self) -> str:
        """One line for :func:`~vlm_collate.check_template`."""
        tokens = ", ".join(repr(t) for t in self.closing) or "none"
        if self.closes:
            return f"the template's own end-of-turn token closes every reply ({tokens})"
        if self.stop_id is None:
            return (
                "the template writes no closing token after the last reply and the tokenizer "
                "has no eos: the last reply has no stop target unless close_last_reply names "
                f"a token id; a reply another turn follows learns the next turn's opener ({tokens})"
            )
        return (
            f"the template writes no closing token after the last reply: a reply another turn "
            f"follows learns the next turn's opening special token ({tokens}), the last reply "
            f"the appended stop token {self.stop_text!r} (close_last_reply='auto')"
        )


def reply_closing(processor: Any) -> ReplyClosing:
    """Whether ``processor``'s template closes its replies, its closing tokens, and the stop
    token the collators append when it does not; cached on the profile per template."""
    profile = profile_of(processor)

    def compute() -> ReplyClosing:
        tokenizer = profile.tokenizer
        reading = _reading(profile)
        eos = getattr(tokenizer, "eos_token_id", None)
        text = getattr(tokenizer, "eos_token", None) if eos is not None else None
        closing = tuple(tokenizer.decode([t]) for t in sorted(reading.closing))
        return ReplyClosing(reading.closes_last, eos, text, closing)

    return profile.cached(("reply_closing", profile.template_key), compute)
