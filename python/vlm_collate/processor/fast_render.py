"""Chat template rendering without ``apply_chat_template``'s per-call overhead.

``processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=False,
**kwargs)`` spends most of its time around the template: it resolves the template,
sorts its keywords, normalises the conversation (message objects to dicts, keys holding
None dropped, OpenAI ``image_url`` items rewritten), rebuilds every value as plain data
(rich objects become ``"<TypeName>"``), copies reasoning under its aliases, and builds
the template's variables (the tokenizer's named special tokens, then the keywords; no
tools, no documents). :class:`TemplateRender` does the same for the inputs whose result
it reproduces with certainty, with the template transformers compiled (its cached
compilation: the same environment, filters and globals such as ``raise_exception`` and
``strftime_now``), and renders it directly (its root render function on a context whose
variables are the globals, copied once, and the call's own: what ``Template.render``
does, less its per-call merge of the globals, which costs as much as rendering a short
conversation). :class:`~.render.Renderer` compares its first direct renderings with
``apply_chat_template``'s and turns the fast path off on a difference. Anything else returns
None and the caller renders with ``apply_chat_template``: a message that is not a plain
dict, a value that is a tuple, a non-dict mapping, a subclass of a scalar, a numpy
scalar, a dataclass or a pydantic model, an OpenAI ``image_url`` item (processors
rewrite it), an empty conversation, a failing rendering (so that the error is
``apply_chat_template``'s own), a template that was replaced, an ``apply_chat_template``
overridden by a subclass or an instance. Built (:func:`template_render_for`) only for a
processor or tokenizer whose ``apply_chat_template`` is transformers' own, with one
template string (not a dict of named templates) and keywords that are all template
variables (a processor sends any other keyword to its ``__call__`` with a warning).
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: Message fields that hold reasoning, in the order transformers reads them (the first
#: one present is copied under ``thinking`` and ``reasoning_content``).
_REASONING_ALIASES = ("reasoning_content", "thinking", "reasoning")

#: Variables the rendering passes itself, besides the special tokens.
_OWN_VARIABLES = frozenset({"messages", "tools", "documents", "add_generation_prompt"})


class _Unsupported(Exception):
    """A value the fast path does not convert with certainty: render the slow way."""


def _is_inert(value: Any) -> bool:
    """Whether ``value`` is an object transformers hands the template as ``"<TypeName>"``
    unchanged by every earlier step: not a scalar, container, numpy scalar, class,
    dataclass instance or model with ``model_dump``."""
    if isinstance(value, (Mapping, list, tuple, str, int, float, np.generic, type)):
        return False
    if dataclasses.is_dataclass(value):
        return False
    return not callable(getattr(value, "model_dump", None))


def _plain(value: Any) -> Any:
    """``value`` as the template sees it: plain scalars as they are, dicts (string keys)
    and lists rebuilt, inert objects as ``"<TypeName>"``; anything else raises
    :class:`_Unsupported`."""
    kind = type(value)
    if kind is str or value is None or kind is int or kind is bool or kind is float:
        return value
    if kind is dict:
        return _plain_dict(value)
    if kind is list:
        return [item if type(item) is str else _plain(item) for item in value]
    try:
        inert = _is_inert(value)
    except Exception as err:  # noqa: BLE001 - an attribute lookup that fails
        raise _Unsupported from err
    if inert:
        return f"<{kind.__name__}>"
    raise _Unsupported


def _plain_dict(value: dict[Any, Any]) -> dict[str, Any]:
    out = {}
    for key, item in value.items():
        if type(key) is not str:
            raise _Unsupported
        out[key] = item if type(item) is str else _plain(item)
    return out


def _plain_message(message: Any, rewrites_image_url: bool) -> dict[str, Any]:
    """A message as the template sees it: keys holding None dropped, values plain,
    reasoning copied under ``thinking`` (first) and ``reasoning_content`` (last)."""
    if type(message) is not dict:
        raise _Unsupported
    out: dict[str, Any] = {}
    for key, value in message.items():
        if value is None:
            continue
        if type(key) is not str:
            raise _Unsupported
        out[key] = _plain(value)
    content = out.get("content")
    if rewrites_image_url and type(content) is list:
        for item in content:
            if type(item) is dict and item.get("type") == "image_url":
                raise _Unsupported  # the processor rewrites it as an image item
    for name in _REASONING_ALIASES:
        if name in out:
            reasoning = out[name]
            return {"thinking": reasoning, **out, "reasoning_content": reasoning}
    return out


def _same_function(owner_class: type, base: type, name: str) -> bool:
    """Whether ``owner_class`` inherits ``base``'s ``name`` unchanged."""
    return inspect.getattr_static(owner_class, name, None) is inspect.getattr_static(
        base, name, None
    )


class TemplateRender:
    """``render(owner, messages)``: ``owner.apply_chat_template(messages, tokenize=False,
    add_generation_prompt=False, **template_kwargs)``'s string, or None where the fast
    path does not apply (the caller then calls ``apply_chat_template``).
    ``render_many(owner, conversations)``: the same per conversation, the special tokens
    read once. Holds no reference to ``owner`` (renderers are cached on the processor's
    profile, which holds it weakly). Build with :func:`template_render_for`."""

    def __init__(
        self,
        owner_class: type,
        is_processor: bool,
        template: str,
        compiled: Any,
        template_kwargs: Mapping[str, Any],
    ):
        self.owner_class = owner_class
        self.is_processor = is_processor
        self.template = template
        self.compiled = compiled
        self.template_kwargs = _plain(dict(template_kwargs))
        # The template's globals (raise_exception, strftime_now, namespace...) copied once:
        # Template.render merges them into a new dict per call, which costs as much as
        # the rendering of a short conversation. transformers never changes them after
        # compiling.
        self.globals = dict(compiled.globals)

    def _variables(self, owner: Any) -> dict[str, Any] | None:
        """The template's variables besides the conversation, or None when ``owner`` is
        not what this renderer was built for (another class, a new template, an
        ``apply_chat_template`` set on the instance) or its special tokens cannot be
        read (``apply_chat_template`` then raises its own error)."""
        try:
            if (
                type(owner) is not self.owner_class
                or owner.chat_template is not self.template
                or "apply_chat_template" in getattr(owner, "__dict__", ())
            ):
                return None
            tokenizer = owner.tokenizer if self.is_processor else owner
            specials = tokenizer.special_tokens_map
        except Exception:  # noqa: BLE001 - the slow path reports it
            return None
        if type(specials) is not dict or any(
            type(k) is not str or type(v) is not str for k, v in specials.items()
        ):
            return None
        return {
            **self.globals,
            **specials,
            **self.template_kwargs,
            "messages": None,
            "tools": None,
            "documents": None,
            "add_generation_prompt": False,
        }

    def _render(self, variables: dict[str, Any], messages: Sequence[Any]) -> str | None:
        if type(messages) is not list or not messages:
            return None
        try:
            variables["messages"] = [_plain_message(m, self.is_processor) for m in messages]
            # Template.render(variables) without its copy: the context's parent is the
            # dict given (``shared``), which holds the globals already.
            compiled = self.compiled
            context = compiled.new_context(variables, shared=True)
            text = compiled.environment.concat(compiled.root_render_func(context))
        except Exception:  # noqa: BLE001 - _Unsupported, or the template's error: slow path
            return None
        return text if type(text) is str else None

    def render(self, owner: Any, messages: Sequence[Any]) -> str | None:
        variables = self._variables(owner)
        return None if variables is None else self._render(variables, messages)

    def render_many(self, owner: Any, conversations: Sequence[Sequence[Any]]) -> list[str | None]:
        variables = self._variables(owner)
        if variables is None:
            return [None] * len(conversations)
        return [self._render(variables, c) for c in conversations]


def template_render_for(
    owner: Any, template_kwargs: Mapping[str, Any] | None = None
) -> TemplateRender | None:
    """The fast renderer of ``owner`` (a processor or a tokenizer), or None where its
    ``apply_chat_template`` is not transformers' own or its template and keywords are
    not the plain case (see the module docstring)."""
    try:
        from transformers import PreTrainedTokenizerBase, ProcessorMixin
        from transformers.utils import chat_template_utils
    except ImportError:
        return None
    compile_template = getattr(chat_template_utils, "_compile_jinja_template", None)
    variables_of = getattr(chat_template_utils, "_get_template_variables", None)
    if compile_template is None or variables_of is None:
        return None
    kind = type(owner)
    if isinstance(owner, ProcessorMixin):
        base: type = ProcessorMixin
        methods = (
            "apply_chat_template",
            "_resolve_chat_template",
            "_prepare_processor_kwargs",
            "_resolve_audio_loading_params",
            "_normalize_conversations",
        )
        if getattr(owner, "tokenizer", None) is None:
            return None
    elif isinstance(owner, PreTrainedTokenizerBase):
        base = PreTrainedTokenizerBase
        methods = ("apply_chat_template", "get_chat_template")
    else:
        return None
    if not all(_same_function(kind, base, m) for m in methods):
        return None
    if "apply_chat_template" in getattr(owner, "__dict__", ()):
        return None
    template = getattr(owner, "chat_template", None)
    if type(template) is not str:
        return None
    kwargs = dict(template_kwargs or {})
    parameters = set(inspect.signature(base.apply_chat_template).parameters)
    if any(type(k) is not str or k in parameters or k in _OWN_VARIABLES for k in kwargs):
        return None
    try:
        compiled = compile_template(template)
        if compiled.environment.is_async or not callable(compiled.root_render_func):
            return None
        if base is ProcessorMixin and not set(kwargs) <= set(variables_of(template)):
            return None  # a keyword the processor takes for its __call__ (with a warning)
        return TemplateRender(kind, base is ProcessorMixin, template, compiled, kwargs)
    except Exception:  # noqa: BLE001 - a template that does not compile, an odd keyword
        return None


__all__ = ["TemplateRender", "template_render_for"]
