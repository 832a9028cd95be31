"""Differential rendering: the exact character span of every assistant reply as the chat
template rendered it, and the training targets of a rendered conversation.

A conversation is rendered once as is, and once more per message with that message's
content replaced by a unique sentinel character (and its reasoning removed). Outside
the message the two renderings agree, so the longest common prefix and suffix of the
two delimit what the template wrote for that content, after every transformation it
applies (trim, strip, reasoning removal, first text item only, role renaming, system
merging). Character spans map to tokens through the fast tokenizer's offsets.

Targets (the label contract): every token overlapping a reply span, and the reply's
end-of-turn, the template's closing tokens after the reply up to and including the
first special token. Scaffolding the template inserts (an empty ``<think></think>``
block) is outside the span; reasoning the message supplies and the template renders
is inside it (``reasoning="label"``) or outside (``reasoning="exclude"``).
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from ..errors import TemplateError
from .fast_render import TemplateRender, template_render_for
from .profile import ProcessorProfile, profile_of

Reasoning = Literal["label", "exclude"]
REASONING_MODES: tuple[str, ...] = ("label", "exclude")

#: Message fields that carry reasoning in the chat templates that read one.
REASONING_FIELDS = ("reasoning_content", "reasoning", "thinking")
_THINK_OPEN, _THINK_CLOSE = "<think>", "</think>"
_SENTINELS = [chr(c) for c in range(0xE000, 0xE100)]  # private-use characters

Render = Callable[[list[dict[str, Any]]], str]

_UNSET: Any = object()
_CHECKED_RENDERINGS = 3
"""Direct renderings of a renderer compared with ``apply_chat_template``'s (see
:meth:`Renderer._checked`)."""


@dataclass(frozen=True)
class Span:
    """Characters ``[start, end)`` of a rendering."""

    start: int
    end: int


@dataclass(frozen=True)
class RenderedConversation:
    """A rendering, and per assistant message the span of its reply (None where the
    template does not render that message)."""

    text: str
    replies: list[Span | None]
    turns_end: int | None = None
    """Where the text the template writes after the last message only begins (a trailing
    eos, say): no end-of-turn reaches past it. None: the end of the text."""


# --------------------------------------------------------------------------- rendering


class Renderer:
    """Renders conversations with a processor's (or tokenizer's) chat template the way
    the collate functions do, no generation prompt, each role's content in a form the
    template renders. ``forms``: role -> the form used (``"string"`` or ``"list"``);
    ``accepts``: role -> every form the template renders. A processor's messages are
    given in ``forms`` (list content first, as the collate functions render them); with
    ``keep_given`` (a bare tokenizer) a message keeps its own form where the template
    renders it, and is converted only where the template would drop it or print it as a
    Python literal."""

    def __init__(
        self,
        profile: ProcessorProfile,
        list_content: bool,
        template_kwargs: Mapping[str, Any] | None,
        forms: Mapping[str, str] | None = None,
        accepts: Mapping[str, frozenset[str]] | None = None,
        keep_given: bool = False,
    ):
        self.profile = profile  # holds the processor weakly: renderers are cached on it
        self.list_content = list_content
        """Whether roles ``forms`` does not name (tool turns...) are given list content."""
        self.template_kwargs = dict(template_kwargs or {})
        self.forms = dict(forms or {})
        self.accepts = dict(accepts or {})
        self.keep_given = keep_given
        self._fast: TemplateRender | None = _UNSET
        self._unchecked = _CHECKED_RENDERINGS

    @property
    def string_roles(self) -> frozenset[str]:
        """Roles whose text-only content is given to the template as a string."""
        return frozenset(r for r, f in self.forms.items() if f == "string")

    def form_of(self, message: Mapping[str, Any]) -> str | None:
        """The form ``message`` is given in (None: as it is)."""
        role = message.get("role")
        if role not in self.forms:  # tool turns...: as user turns
            role = "user"
        if role not in self.forms:
            return "list" if self.list_content else None
        if self.keep_given:
            own = "string" if isinstance(message.get("content"), str) else "list"
            if own in self.accepts.get(role, ()):
                return None
        return self.forms[role]

    def __call__(self, messages: Sequence[Mapping[str, Any]]) -> str:
        msgs = [_in_form(dict(m), self.form_of(m)) for m in messages]
        processor = self.profile.processor
        fast = self._fast_render(processor)
        text = None if fast is None else fast.render(processor, msgs)
        return self._checked(processor, msgs, text)

    def batch(self, conversations: Sequence[Sequence[Mapping[str, Any]]]) -> list[str]:
        """``[self(c) for c in conversations]``, the template's variables built once."""
        given = [[_in_form(dict(m), self.form_of(m)) for m in c] for c in conversations]
        processor = self.profile.processor
        fast = self._fast_render(processor)
        texts = [None] * len(given) if fast is None else fast.render_many(processor, given)
        return [self._checked(processor, m, t) for m, t in zip(given, texts)]

    def _fast_render(self, processor: Any) -> TemplateRender | None:
        """The template rendered directly (:mod:`.fast_render`), built on first use; None
        where only ``apply_chat_template`` renders this processor's template exactly."""
        if self._fast is _UNSET:
            self._fast = template_render_for(processor, self.template_kwargs)
        return self._fast

    def _checked(self, processor: Any, msgs: list[dict[str, Any]], text: str | None) -> str:
        """``text`` (the direct rendering of ``msgs``), or ``apply_chat_template``'s when it
        is None. The first direct renderings are compared with ``apply_chat_template``'s:
        a difference (a transformers version whose rendering differs from the fast
        path's) turns the fast path off for good."""
        if text is not None and self._unchecked <= 0:
            return text
        try:
            expected = processor.apply_chat_template(
                msgs, tokenize=False, add_generation_prompt=False, **self.template_kwargs
            )
        except Exception:
            if text is not None:
                self._fast = None
            raise
        if text is not None:
            self._unchecked -= 1
            if text != expected:
                self._fast = None
        return expected  # type: ignore[no-any-return]


def _in_form(message: dict[str, Any], form: str | None) -> dict[str, Any]:
    """``message`` as it is (``form`` None), with its content as a string (text-only
    lists joined; media lists kept: a template that takes media takes list content for
    them) or as a list of items."""
    content = message.get("content")
    if form is None or content is None:
        return message
    if form == "list":
        if content == "" and message.get("tool_calls"):
            return message  # templates test ``content`` for truth beside tool calls (Qwen3-VL)
        if isinstance(content, str):
            return {**message, "content": [{"type": "text", "text": content}]}
        return message
    if isinstance(content, list) and all(
        isinstance(i, Mapping) and i.get("type") == "text" for i in content
    ):
        return {**message, "content": "".join(str(i.get("text", "")) for i in content)}
    return message


_FORM_PROBE = {"system": "SYSQZX", "user": "USRQZX", "assistant": "ASTQZX"}


def _renders_plainly(text: str, roles: Sequence[str]) -> bool:
    """Whether every role's probe text is in ``text``, not as a Python literal."""
    return all(_FORM_PROBE[r] in text and f"'text': '{_FORM_PROBE[r]}'" not in text for r in roles)


def renderer_for(processor: Any, template_kwargs: Mapping[str, Any] | None = None) -> Renderer:
    """The renderer of ``processor`` (or its profile), its content form chosen once by
    rendering a probe; cached on the profile per template and keywords."""
    profile = profile_of(processor)
    key = ("renderer", profile.template_key, repr(sorted((template_kwargs or {}).items())))
    return profile.cached(key, lambda: _probed_renderer(profile, template_kwargs))


def _probed_renderer(
    profile: ProcessorProfile, template_kwargs: Mapping[str, Any] | None
) -> Renderer:
    """The renderer whose content forms the template renders: each role (system, user,
    assistant) in the preferred form (list content for a processor, strings for a bare
    tokenizer) unless the template raises on it, drops it or prints it as a Python
    literal, and then in the other form; then which roles also render the other form."""
    is_tokenizer = profile.tokenizer is profile.processor
    preferred, other = ("string", "list") if is_tokenizer else ("list", "string")
    failures: list[str] = []
    dropped: set[str] = set()

    def renders(forms: dict[str, str]) -> bool:
        renderer = Renderer(profile, not is_tokenizer, template_kwargs, forms)
        messages = [{"role": r, "content": _FORM_PROBE[r]} for r in forms]
        try:
            text = renderer(messages)
        except Exception as err:  # noqa: BLE001 - templates fail in many ways on a form
            failures.append(str(err) or type(err).__name__)
            return False
        if _renders_plainly(text, list(forms)):
            return True
        dropped.update(r for r in forms if not _renders_plainly(text, [r]))
        failures.append(f"content in the forms {forms} is not rendered")
        return False

    for roles in (("system", "user", "assistant"), ("user", "assistant")):
        combos = sorted(
            itertools.product((preferred, other), repeat=len(roles)),
            key=lambda c: sum(f != preferred for f in c),
        )
        for combo in combos:
            forms = dict(zip(roles, combo))
            if not renders(forms):
                continue
            accepts = {
                r: frozenset((f, _OTHER_FORM[f]) if renders({**forms, r: _OTHER_FORM[f]}) else (f,))
                for r, f in forms.items()
            }
            return Renderer(
                profile, not is_tokenizer, template_kwargs, forms, accepts, is_tokenizer
            )
    if "assistant" in dropped:
        raise TemplateError(
            "the processor's chat template does not render assistant replies (in string or "
            "list content), so no labels can be built; use a template with an assistant turn"
        )
    raise TemplateError(
        "the chat template cannot render a plain user/assistant conversation, with string "
        f"or list content: {failures[-1] if failures else 'no rendering'}"
    )


_OTHER_FORM = {"string": "list", "list": "string"}


# --------------------------------------------------------------------------- reasoning


def reasoning_of(message: Mapping[str, Any]) -> str:
    """The reasoning text a message supplies: a reasoning field, or the text of a
    ``<think>...</think>`` block in its content; empty when none."""
    for name in REASONING_FIELDS:
        value = message.get(name)
        if isinstance(value, str) and value.strip():
            return value
    text = _text_of(message.get("content"))
    if _THINK_CLOSE in text:
        return text.split(_THINK_CLOSE)[0].split(_THINK_OPEN)[-1]
    return ""


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, Sequence):
        return "".join(
            i.get("text", "") for i in content if isinstance(i, Mapping) and i.get("type") == "text"
        )
    return ""


def _without_reasoning(message: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in message.items() if k not in REASONING_FIELDS}


def _with_sentinel(message: Mapping[str, Any], sentinel: str) -> dict[str, Any]:
    """The message with its content (and reasoning) replaced by ``sentinel``, in the
    content's own form (string, or one text item)."""
    bare = _without_reasoning(message)
    content = message.get("content")
    bare["content"] = (
        sentinel
        if isinstance(content, str) or content is None
        else [{"type": "text", "text": sentinel}]
    )
    return bare


def _with_answer_sentinel(message: Mapping[str, Any], sentinel: str) -> dict[str, Any] | None:
    """The message with its reasoning kept and its answer replaced by ``sentinel``."""
    if any(isinstance(message.get(n), str) and message.get(n).strip() for n in REASONING_FIELDS):
        return {**message, "content": _with_sentinel(message, sentinel)["content"]}
    content = message.get("content")
    if isinstance(content, str):
        if _THINK_CLOSE not in content:
            return None
        cut = content.rindex(_THINK_CLOSE) + len(_THINK_CLOSE)
        return {**message, "content": content[:cut] + sentinel}
    items = list(content or [])
    for i in range(len(items) - 1, -1, -1):
        item = items[i]
        if item.get("type") == "text" and _THINK_CLOSE in item.get("text", ""):
            text = item["text"]
            cut = text.rindex(_THINK_CLOSE) + len(_THINK_CLOSE)
            return {
                **message,
                "content": [*items[:i], {"type": "text", "text": text[:cut] + sentinel}],
            }
    return None


# --------------------------------------------------------------------------- differential rendering


def _sentinel_for(*texts: str) -> str:
    for s in _SENTINELS:
        if not any(s in t for t in texts):
            return s
    raise TemplateError("every private-use sentinel character occurs in the conversation")


def _common_prefix(a: str, b: str, limit: int) -> int:
    """Length of the longest common prefix of ``a`` and ``b``, at most ``limit``."""
    limit = min(limit, len(a), len(b))
    if a[:limit] == b[:limit]:
        return limit
    lo, hi = 0, limit  # a[:lo] == b[:lo], a[:hi] != b[:hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid
    return lo


def _common_suffix(a: str, b: str, limit: int) -> int:
    """Length of the longest common suffix of ``a`` and ``b``, at most ``limit``."""
    limit = min(limit, len(a), len(b))
    if limit == 0 or a[len(a) - limit :] == b[len(b) - limit :]:
        return limit
    lo, hi = 0, limit
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if a[len(a) - mid :] == b[len(b) - mid :]:
            lo = mid
        else:
            hi = mid
    return lo


def _differing_span(full: str, variant: str, sentinel: str) -> Span | None:
    """Where ``full`` differs from ``variant`` (which holds ``sentinel`` once, in place of
    a message's content); None when the template did not render the sentinel."""
    at = variant.find(sentinel)
    if at < 0:
        return None
    start = _common_prefix(full, variant, at)
    tail = _common_suffix(full, variant, min(len(variant) - at - 1, len(full) - start))
    return Span(start, max(start, len(full) - tail))


def content_span(
    render: Render,
    messages: Sequence[Mapping[str, Any]],
    k: int,
    full: str,
    reasoning: Reasoning = "label",
) -> Span | None:
    """Characters of ``full`` (the rendering of ``messages``) that message ``k``'s content
    (and, for ``reasoning="label"``, its rendered reasoning) became; None when the template
    does not render message ``k``'s content."""
    message = messages[k]
    sentinel = _sentinel_for(full, repr(message))
    variant = [*messages[:k], _with_sentinel(message, sentinel), *messages[k + 1 :]]
    span = _differing_span(full, render(variant), sentinel)
    if span is None or not reasoning_of(message) or message.get("role") != "assistant":
        return span
    answer_message = _with_answer_sentinel(message, sentinel)
    if answer_message is None:
        return span
    answer = _differing_span(
        full, render([*messages[:k], answer_message, *messages[k + 1 :]]), sentinel
    )
    if answer is None or answer.start <= span.start:
        return span  # the template does not render the reasoning
    if reasoning == "exclude":
        return Span(answer.start, span.end)
    # The reasoning block opens where an empty scaffold would: include its opening tag.
    head = full[: span.start].rstrip()
    if head.endswith(_THINK_OPEN):
        return Span(len(head) - len(_THINK_OPEN), span.end)
    return span


def turns_end(render: Render, messages: Sequence[Mapping[str, Any]], full: str) -> int:
    """Where what the template writes after the whole conversation (not after a turn)
    begins: the point at which a rendering with one more user message departs from
    ``full``, when that is past every reply; else ``len(full)``."""
    sentinel = _sentinel_for(full)
    try:
        longer = render([*messages, {"role": "user", "content": sentinel}])
    except Exception:  # noqa: BLE001 - a template may refuse the extra turn
        return len(full)
    return _common_prefix(full, longer, len(full))


def rendered_replies(
    render: Render, messages: Sequence[Mapping[str, Any]], reasoning: Reasoning = "label"
) -> RenderedConversation:
    """The rendering of ``messages`` and the span of each assistant reply in it.

    Two renderings in all for the replies that supply no reasoning (the conversation, and
    the conversation with every such reply replaced by its own sentinel:
    :func:`joint_content_spans`), so the cost is linear in the number of turns; a reply
    with reasoning, or every reply when the template reacts to the content (the joint
    rendering does not decompose uniquely), is rendered per message (:func:`content_span`)."""
    messages = [dict(m) for m in messages]
    full = render(messages)
    assistant = [k for k, m in enumerate(messages) if m.get("role") == "assistant"]
    plain = [k for k in assistant if not reasoning_of(messages[k])]
    joint = joint_content_spans(render, messages, plain, full) if plain else {}
    replies = [
        joint[k]
        if joint is not None and k in joint
        else content_span(render, messages, k, full, reasoning)
        for k in assistant
    ]
    return RenderedConversation(full, replies, bounded_turns_end(render, messages, full, replies))


_JOINT_BASE = 0xF0000  # supplementary private-use plane A: one sentinel per message
_JOINT_SENTINELS = re.compile("[\U000f0000-\U000ffffd]")


def joint_content_spans(
    render: Render, messages: Sequence[Mapping[str, Any]], indices: Sequence[int], full: str
) -> dict[int, Span | None] | None:
    """The span of the content of each message in ``indices`` in ``full`` (the rendering
    of ``messages``), from one rendering with each of those contents replaced by its own
    sentinel: the text between sentinels is the template's, so ``full`` is that text with
    each content in place of its sentinel. None when the decomposition is not certain
    (a sentinel rendered twice or out of order, the template writing other text around a
    sentinel than around the content, or a content that holds the text following it, so
    that matching from the left and from the right disagree): the caller then renders per
    message, whose spans these equal whenever they are returned."""
    if len(indices) > 0xFFFD or _JOINT_SENTINELS.search(full):
        return None
    if any(_JOINT_SENTINELS.search(repr(messages[k])) for k in indices):
        return None
    variant = [dict(m) for m in messages]
    for n, k in enumerate(indices):
        variant[k] = _with_sentinel(messages[k], chr(_JOINT_BASE + n))
    text = render(variant)
    pieces: list[str] = []
    order: list[int] = []
    cursor = 0
    for match in _JOINT_SENTINELS.finditer(text):
        n = ord(match.group()) - _JOINT_BASE
        if n >= len(indices) or (order and n <= order[-1]):
            return None  # a sentinel twice, out of order, or not ours
        order.append(n)
        pieces.append(text[cursor : match.start()])
        cursor = match.end()
    pieces.append(text[cursor:])
    left = _decomposed(full, pieces, from_left=True)
    if left is None or left != _decomposed(full, pieces, from_left=False):
        return None
    spans: dict[int, Span | None] = {k: None for k in indices}  # not rendered
    for n, (start, end) in zip(order, left):
        spans[indices[n]] = Span(start, end)
    return spans


def _decomposed(full: str, pieces: list[str], from_left: bool) -> list[tuple[int, int]] | None:
    """Spans ``s_i`` with ``full == pieces[0] + full[s_0] + pieces[1] + ... + pieces[-1]``,
    each gap matched as early (``from_left``) or as late as possible; None when none."""
    head, tail = pieces[0], pieces[-1]
    if len(full) < len(head) + len(tail) or not full.startswith(head) or not full.endswith(tail):
        return None
    lo, hi = len(head), len(full) - len(tail)
    middle = pieces[1:-1]
    spans: list[tuple[int, int]] = []
    if from_left:
        start = lo
        for piece in middle:
            end = full.find(piece, start, hi)
            if end < 0:
                return None
            spans.append((start, end))
            start = end + len(piece)
        spans.append((start, hi))
        return spans
    end = hi
    for piece in reversed(middle):
        at = full.rfind(piece, lo, end)
        if at < 0:
            return None
        spans.append((at + len(piece), end))
        end = at
    spans.append((lo, end))
    return spans[::-1]


def bounded_turns_end(
    render: Render, messages: list[dict[str, Any]], full: str, replies: list[Span | None]
) -> int | None:
    last = max((s.end for s in replies if s is not None), default=None)
    if last is None:
        return None
    end = turns_end(render, messages, full)
    return end if end >= last else None


# --------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class TokenTargets:
    """Token ids of a rendering, which are targets, and per assistant reply the
    ``(first, stop)`` token range it labels (reply and end-of-turn), or None."""

    ids: list[int]
    targets: list[bool]
    turns: list[tuple[int, int] | None]
    offsets: list[tuple[int, int]]


def token_targets(
    tokenizer: Any,
    rendered: RenderedConversation,
    specials: frozenset[int],
    never: frozenset[int] | set[int] = frozenset(),
    closing: frozenset[int] | None = None,
) -> TokenTargets:
    """Targets of the tokenized rendering: tokens overlapping a reply span, then the
    end-of-turn (up to and including the first special token after the reply, of
    ``specials``, when it is one of ``closing``, the template's closing tokens
    (:func:`.closing.closing_ids`; None: any special token): a reply rendered without
    its closing token takes nothing from the next turn). Ids in ``never`` (media
    placeholders) are never targets."""
    enc = tokenizer(rendered.text, add_special_tokens=False, return_offsets_mapping=True)
    ids = [int(i) for i in enc["input_ids"]]
    offsets = [(int(a), int(b)) for a, b in enc["offset_mapping"]]
    targets = [False] * len(ids)
    turns: list[tuple[int, int] | None] = []
    spans = rendered.replies
    t = 0
    for k, span in enumerate(spans):
        if span is None:
            turns.append(None)
            continue
        while t < len(ids) and offsets[t][1] <= span.start:
            t += 1
        first = t
        while t < len(ids) and offsets[t][0] < span.end and span.end > span.start:
            targets[t] = ids[t] not in never
            t += 1
        # The end-of-turn: up to the first special token, never into the next reply.
        limit = next((s.start for s in spans[k + 1 :] if s is not None), None)
        if limit is None:
            limit = len(rendered.text) if rendered.turns_end is None else rendered.turns_end
        close = t
        while close < len(ids) and ids[close] not in specials and offsets[close][0] < limit:
            close += 1
        if (
            close < len(ids)
            and ids[close] in specials
            and offsets[close][0] < limit
            and (closing is None or ids[close] in closing)
        ):
            for j in range(t, close + 1):
                targets[j] = ids[j] not in never
            t = close + 1
        turns.append((first, t))
    return TokenTargets(ids, targets, turns, offsets)
