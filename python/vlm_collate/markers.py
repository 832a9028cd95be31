"""Assistant markers derived from a processor's own chat template.

Rendering probe conversations and mapping the probe reply through the fast
tokenizer's character offsets gives, for any template:
* the assistant headers (the tokens between the previous turn and the reply),
  plus their stable prefix for replies whose first character merges with the
  header's last token (a reply starting with a newline or a space);
* the end-of-turn sequence (from the end of the reply up to and including the
  first special token).
The result is cached per tokenizer and template.
"""

from __future__ import annotations

import logging
import weakref
from dataclasses import dataclass, field
from typing import Any

from .conversation import with_list_content
from .errors import TemplateError
from .tokens import media_token_ids, tokenizer_of

logger = logging.getLogger("vlm_collate")

_PROBE = "ZQX probe reply 7"
_VARIANTS = (_PROBE, "\n" + _PROBE, " " + _PROBE)


@dataclass(frozen=True)
class Markers:
    """Token sequences that open and close assistant replies."""

    starts: list[list[int]]
    ends: list[list[int]]
    """Empty when the template closes replies with no special token: labels then
    come from the content search, after each assistant header."""
    ignore_ids: list[int] = field(default_factory=list)

    @property
    def stop_ids(self) -> list[int]:
        """The last token of each end-of-turn sequence."""
        return sorted({e[-1] for e in self.ends})


class MarkerError(TemplateError):
    """The chat template has no derivable assistant header or end-of-turn token."""


def _render(processor: Any, messages: list[dict[str, Any]], list_content: bool) -> str:
    if list_content:
        messages = with_list_content(messages)
    return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)


def _reply_tokens(tokenizer: Any, text: str, before: int, start: int, end: int):
    """(header ids, end-of-turn ids) around the reply at ``text[start:end]``, where
    the header is every token wholly inside ``text[before:start]``."""
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    header = [t for t, (a, b) in zip(ids, offsets) if a >= before and b <= start and b > a]
    special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}))
    tail: list[int] = []
    for t, (a, _b) in zip(ids, offsets):
        if a < end:
            continue
        tail.append(t)
        if t in special:
            return header, tail
    return header, []


def _probe_spans(processor: Any, list_content: bool) -> list[tuple[str, int, int, int]]:
    """For each probe: (rendering, start of the assistant turn, reply start, reply end)."""
    user = {"role": "user", "content": "What is shown?"}
    spans = []
    for reply in _VARIANTS:
        assistant = {"role": "assistant", "content": reply}
        for history in ([user], [user, {"role": "assistant", "content": _PROBE}, user]):
            before = _render(processor, history, list_content)
            text = _render(processor, [*history, assistant], list_content)
            if not text.startswith(before):
                raise MarkerError("the rendering of a conversation does not extend its prefix")
            rendered = reply
            start = text.find(rendered, len(before))
            if start < 0:  # a template that trims replies
                rendered = reply.strip()
                start = text.find(rendered, len(before))
            if start < 0:
                raise TemplateError(
                    "the processor's chat template does not render assistant replies, so no "
                    "labels can be built; use a template with an assistant turn"
                )
            spans.append((text, len(before), start, start + len(rendered)))
    return spans


def derive_markers(processor: Any) -> Markers:
    """Markers of ``processor``'s chat template; MarkerError when none can be derived."""
    tokenizer = tokenizer_of(processor)
    # Processors' templates take list content; plain tokenizers' templates take strings.
    forms = (True, False) if tokenizer is not processor else (False, True)
    spans, failures = None, []
    for list_content in forms:
        try:
            spans = _probe_spans(processor, list_content)
            break
        except Exception as err:  # noqa: BLE001 - templates fail in many ways on a content form
            failures.append(err)
    if spans is None:
        if any(isinstance(f, TemplateError) for f in failures):
            raise next(f for f in failures if isinstance(f, TemplateError))
        raise MarkerError(
            f"the chat template could not render a probe conversation: {failures[-1]}"
        )
    headers, ends = [], []
    for text, before, start, end in spans:
        header, tail = _reply_tokens(tokenizer, text, before, start, end)
        headers.append(header)
        ends.append(tail)
    if not all(headers):
        raise MarkerError("no assistant header in the chat template")
    prefix = headers[0]
    for h in headers[1:]:
        n = 0
        while n < min(len(prefix), len(h)) and prefix[n] == h[n]:
            n += 1
        prefix = prefix[:n]
    if not prefix:
        raise MarkerError("the assistant headers of the chat template share no tokens")
    starts = sorted({tuple(h) for h in headers} | {tuple(prefix)}, key=len, reverse=True)
    stable_end = all(ends) and len({tuple(e) for e in ends}) == 1
    return Markers(
        starts=[list(s) for s in starts],
        ends=[ends[0]] if stable_end else [],
        ignore_ids=media_token_ids(processor),
    )


_CACHE: weakref.WeakKeyDictionary[Any, dict[str, Markers | None]] = weakref.WeakKeyDictionary()


def markers_for(processor: Any) -> Markers | None:
    """Cached markers of ``processor``, or None (logged once) when its template has none.

    A template that does not render assistant replies at all raises TemplateError."""
    tokenizer = tokenizer_of(processor)
    template = str(getattr(processor, "chat_template", None) or "")
    try:
        per_template = _CACHE.setdefault(tokenizer, {})
    except TypeError:
        per_template = {}
    if template not in per_template:
        try:
            markers = derive_markers(processor)
        except MarkerError as err:
            logger.warning("no assistant markers (%s); labels use the content search", err)
            markers = None
        if markers is not None and not markers.ends:
            logger.warning(
                "no end-of-turn token in the chat template; labels use the content search "
                "after each assistant header"
            )
        per_template[template] = markers
    return per_template[template]
