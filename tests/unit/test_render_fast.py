"""The direct template rendering (processor/fast_render.py) against apply_chat_template.

For every processor ``vlm_collate.testing`` builds (each family's, the stand-ins, and a
bare tokenizer per published template of test_templates), and a varied set of
conversations (roles, turns, images and videos, string and list content, non-ASCII and
empty text, reasoning fields, tool turns, keys holding None, media objects in items),
the fast rendering is ``apply_chat_template``'s string exactly, or None (the caller
then renders with ``apply_chat_template``) where it raises; a renderer's ``__call__``
and ``batch`` equal ``apply_chat_template`` of the conversation in the renderer's forms.
Inputs the fast path leaves to ``apply_chat_template`` (tuples, OpenAI ``image_url``
items, dataclasses, empty conversations, a replaced template, an overridden
``apply_chat_template``) give None. Render times are printed, not asserted.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any

import numpy as np
import pytest
from PIL import Image
from test_templates import SPECS

from vlm_collate import testing
from vlm_collate.processor.fast_render import TemplateRender, template_render_for
from vlm_collate.processor.profile import profile_of
from vlm_collate.processor.render import _in_form, renderer_for
from vlm_collate.testing.vocabularies import template_text

PROCESSORS = {
    **testing.FAMILY_PROCESSORS,
    "qwen2_5_vl": testing.qwen2_5_vl_processor,
    "qwen3_omni": testing.qwen3_omni_processor,
    "phi4_multimodal": testing.phi4_multimodal_processor,
    "kimi_vl": testing.kimi_vl_processor,
    "kimi_k25_remote": testing.kimi_k25_remote_processor,
    "kimi_k25": testing.kimi_k25_processor,
    "tokenizer_qwen2": testing.qwen2_tokenizer,
    "tokenizer_qwen3_omni": testing.qwen3_omni_tokenizer,
    **{
        f"tokenizer_{name}": functools.partial(
            lambda spec: spec.build(template_text(spec.template)), spec
        )
        for name, spec in SPECS.items()
    },
}
"""Name -> builder of every processor (and bare tokenizer with a template) under test."""

OVERRIDDEN = {"smolvlm", "qwen3_omni"}
"""Processors whose class overrides apply_chat_template: no fast path."""


@functools.cache
def built(name: str) -> Any:
    return PROCESSORS[name]()


IMG = Image.new("RGB", (32, 24), (200, 10, 10))


def _t(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _user(*items: Any) -> dict[str, Any]:
    return {"role": "user", "content": [_t(i) if isinstance(i, str) else i for i in items]}


def _assistant(content: Any, **extra: Any) -> dict[str, Any]:
    return {"role": "assistant", "content": content, **extra}


CONVERSATIONS: dict[str, list[dict[str, Any]]] = {
    "user_string": [{"role": "user", "content": "Hello there."}],
    "user_list": [_user("Hello there.")],
    "image_turn": [_user({"type": "image"}, "What is this?"), _assistant("A red square.")],
    "image_object": [
        _user({"type": "image", "image": IMG}, "What is this?"),
        _assistant([_t("A red square.")]),
    ],
    "image_path_bytes_array": [
        _user(
            {"type": "image", "image": "/tmp/some.jpg"},
            {"type": "image", "image": b"\xff\xd8\xff"},
            {"type": "image", "image": np.zeros((4, 4, 3), np.uint8)},
            "Three images.",
        ),
        _assistant("Three."),
    ],
    "video_turn": [_user({"type": "video"}, "Describe the clip."), _assistant("A clip.")],
    "system_multi_turn": [
        {"role": "system", "content": "You are terse."},
        _user({"type": "image"}, "First?"),
        _assistant("One."),
        {"role": "user", "content": "Second?"},
        _assistant([_t("Two.")]),
    ],
    "system_list": [
        {"role": "system", "content": [_t("Be kind.")]},
        _user("Hi"),
        _assistant([_t("Hello!")]),
    ],
    "non_ascii": [
        _user("Ça va ? 日本語のテキスト, emoji 🙂, مرحبا, \u200b zero width"),
        _assistant("Très bien — ありがとう 🙂\n\ttabs and\nnewlines"),
    ],
    "empty_strings": [{"role": "user", "content": ""}, _assistant("")],
    "empty_items": [_user(""), _assistant([_t("")])],
    "reasoning_content": [
        _user("2+2?"),
        _assistant("4", reasoning_content="Add two and two."),
    ],
    "thinking_field": [_user("2+2?"), _assistant("4", thinking="Add them.")],
    "reasoning_field": [_user("2+2?"), _assistant("4", reasoning="Add them.")],
    "think_in_content": [_user("2+2?"), _assistant("<think>Add them.</think>4")],
    "none_values": [
        {"role": "user", "content": "Hi", "name": None},
        _assistant("Hello", tool_calls=None, reasoning_content=None),
    ],
    "tool_turn": [
        _user("Weather in Paris?"),
        _assistant(
            "",
            tool_calls=[
                {
                    "type": "function",
                    "function": {"name": "weather", "arguments": {"city": "Paris"}},
                }
            ],
        ),
        {"role": "tool", "content": "Sunny, 21 C", "name": "weather"},
        _assistant("It is sunny."),
    ],
    "template_like_text": [
        _user("{{ bos_token }} {% if %} <|im_start|> [INST] <start_of_turn>"),
        _assistant("{{ messages }}"),
    ],
    "ends_with_user": [_user("One"), _assistant("Two"), {"role": "user", "content": "Three"}],
}


@dataclasses.dataclass
class _Message:
    role: str
    content: str


UNSUPPORTED: dict[str, Any] = {
    "empty": [],
    "tuple_content": [{"role": "user", "content": (_t("Hi"),)}],
    "image_url": [
        {"role": "user", "content": [_t("Hi"), {"type": "image_url", "image_url": {"url": "x"}}]}
    ],
    "dataclass_message": [_Message("user", "Hi")],
    "numpy_scalar": [{"role": "user", "content": "Hi", "n": np.int64(3)}],
    "str_subclass": [{"role": "user", "content": np.str_("Hi")}],
    "tuple_messages": ({"role": "user", "content": "Hi"},),
}


def _slow(processor: Any, messages: Any, **kwargs: Any) -> str | Exception:
    try:
        return processor.apply_chat_template(  # type: ignore[no-any-return]
            messages, tokenize=False, add_generation_prompt=False, **kwargs
        )
    except Exception as err:  # noqa: BLE001 - the fast path must then give None
        return err


def _fast_of(name: str) -> tuple[Any, TemplateRender | None]:
    processor = built(name)
    fast = template_render_for(processor)
    if name in OVERRIDDEN:
        assert fast is None, f"{name}: apply_chat_template is overridden, no fast path"
    elif getattr(processor, "chat_template", None) is not None:
        assert fast is not None, f"{name}: no fast path"
    return processor, fast


def _as_given_and_forms(name: str, conversation: list[dict[str, Any]]) -> list[list[dict]]:
    """The conversation as given, and in the renderer's forms (string and list content)."""
    renderer = renderer_for(built(name))
    in_forms = [_in_form(dict(m), renderer.form_of(m)) for m in conversation]
    strings = [_in_form(dict(m), "string") for m in conversation]
    lists = [_in_form(dict(m), "list") for m in conversation]
    return [conversation, in_forms, strings, lists]


OVERRIDDEN = frozenset({"qwen3_omni", "smolvlm"})
"""Processors whose class overrides ``apply_chat_template`` or its helpers."""


@pytest.mark.parametrize("name", sorted(OVERRIDDEN))
def test_an_overridden_apply_chat_template_has_no_fast_render(name: str) -> None:
    assert _fast_of(name)[1] is None


@pytest.mark.parametrize("name", sorted(set(PROCESSORS) - OVERRIDDEN))
def test_fast_render_equals_apply_chat_template(name: str) -> None:
    processor, fast = _fast_of(name)
    assert fast is not None, f"{name}: no fast render"
    rendered = 0
    for case, conversation in CONVERSATIONS.items():
        for variant in _as_given_and_forms(name, conversation):
            expected = _slow(processor, variant)
            got = fast.render(processor, variant)
            if isinstance(expected, Exception):
                assert got is None, f"{name}/{case}: rendered where the template raises"
                continue
            assert got == expected, f"{name}/{case}"
            rendered += 1
    assert rendered >= len(CONVERSATIONS), f"{name}: too few conversations rendered"


@pytest.mark.parametrize("name", sorted(PROCESSORS))
def test_renderer_call_and_batch_equal_apply_chat_template(name: str) -> None:
    processor = built(name)
    renderer = renderer_for(processor)
    renderable, expected = [], []
    for conversation in CONVERSATIONS.values():
        in_forms = [_in_form(dict(m), renderer.form_of(m)) for m in conversation]
        slow = _slow(processor, in_forms, **renderer.template_kwargs)
        if isinstance(slow, Exception):
            with pytest.raises(type(slow)):
                renderer(conversation)
            continue
        renderable.append(conversation)
        expected.append(slow)
    for _ in range(2):  # past the renderer's first renderings, which it checks itself
        assert [renderer(c) for c in renderable] == expected, name
        assert renderer.batch(renderable) == expected, name
    assert renderer.batch([]) == []
    if name not in OVERRIDDEN:
        assert renderer._fast is not None, f"{name}: the fast path was turned off"


@pytest.mark.parametrize("name", ["qwen2_5_vl", "gemma3", "tokenizer_llama3_1"])
@pytest.mark.parametrize("case", sorted(UNSUPPORTED))
def test_unsupported_inputs_fall_back(name: str, case: str) -> None:
    processor, fast = _fast_of(name)
    assert fast is not None
    if case == "image_url" and name.startswith("tokenizer_"):
        # a tokenizer does not rewrite image_url items: the fast path renders them
        expected = _slow(processor, UNSUPPORTED[case])
        assert fast.render(processor, UNSUPPORTED[case]) == expected
        return
    assert fast.render(processor, UNSUPPORTED[case]) is None
    assert fast.render_many(processor, [UNSUPPORTED[case]]) == [None]


def test_a_replaced_template_or_patched_instance_falls_back() -> None:
    processor = testing.qwen2_5_vl_processor()
    fast = template_render_for(processor)
    assert fast is not None
    messages = CONVERSATIONS["image_turn"]
    assert fast.render(processor, messages) == _slow(processor, messages)
    processor.chat_template = processor.chat_template + "{{ 'x' }}"
    assert fast.render(processor, messages) is None
    # a renderer built for the new template renders it
    assert renderer_for(processor)(messages).endswith("x")
    processor.apply_chat_template = lambda *a, **k: "patched"
    assert template_render_for(processor) is None
    assert fast.render(processor, messages) is None


def test_special_tokens_are_read_per_rendering() -> None:
    template = "{{ bos_token }}{% for m in messages %}{{ m['content'] }}{{ eos_token }}{% endfor %}"
    tokenizer = testing.qwen2_tokenizer()
    tokenizer.chat_template = template
    fast = template_render_for(tokenizer)
    assert fast is not None
    messages = [{"role": "user", "content": "Hi"}]
    before = fast.render(tokenizer, messages)
    assert before == _slow(tokenizer, messages)
    tokenizer.eos_token = "<|im_start|>"
    after = fast.render(tokenizer, messages)
    assert after == _slow(tokenizer, messages) and after != before


def test_template_keywords() -> None:
    processor = built("qwen3_vl")
    tokenizer = built("tokenizer_qwen3_reasoning")
    # A variable of the template: passed; the same as apply_chat_template with it.
    for owner in (tokenizer,):
        fast = template_render_for(owner, {"enable_thinking": False})
        assert fast is not None
        messages = CONVERSATIONS["reasoning_content"]
        assert fast.render(owner, messages) == _slow(owner, messages, enable_thinking=False)
    # A processor takes a keyword that is not a template variable for its __call__.
    assert template_render_for(processor, {"not_a_variable": 1}) is None
    # Keywords apply_chat_template reads itself never reach the template.
    assert template_render_for(processor, {"tools": []}) is None
    assert template_render_for(processor, {"continue_final_message": True}) is None


def test_a_differing_fast_rendering_turns_the_fast_path_off() -> None:
    processor = testing.qwen2_5_vl_processor()
    renderer = renderer_for(profile_of(processor))
    messages = CONVERSATIONS["image_turn"]
    expected = _slow(processor, messages)

    class Wrong:
        def render(self, owner: Any, msgs: Any) -> str:
            return "wrong"

    renderer._fast, renderer._unchecked = Wrong(), 3  # type: ignore[assignment]
    assert renderer(messages) == expected
    assert renderer._fast is None
    assert renderer(messages) == expected


def test_render_time_is_printed() -> None:
    """Per-row render time, fast path and apply_chat_template (printed, not asserted)."""
    processor = built("qwen2_5_vl")
    renderer = renderer_for(processor)
    conversations = [
        CONVERSATIONS[k] for k in ("image_turn", "system_multi_turn", "non_ascii")
    ] * 100
    in_forms = [[_in_form(dict(m), renderer.form_of(m)) for m in c] for c in conversations]
    renderer.batch(conversations)  # checked renderings done
    times: dict[str, float] = {}
    for _ in range(3):
        t0 = time.perf_counter()
        fast = renderer.batch(conversations)
        times["batch"] = min(times.get("batch", 1.0), time.perf_counter() - t0)
        t0 = time.perf_counter()
        slow = [_slow(processor, m) for m in in_forms]
        times["apply"] = min(times.get("apply", 1.0), time.perf_counter() - t0)
    assert fast == slow
    n = len(conversations)
    print(
        f"\nrender per conversation: fast {times['batch'] / n * 1e6:.1f} us, "
        f"apply_chat_template {times['apply'] / n * 1e6:.1f} us"
    )
