"""The batch text is the template's own rendering of the conversation (issue 19 item 2).

For every family of ``FAMILY_PROCESSORS`` and each input format (``messages``, LLaVA /
ShareGPT, OpenAI, the Cauldron, TRL prompt/completion as strings and as message lists),
the text the encode step renders equals ``processor.apply_chat_template`` of the row's
conversation with each message's content in the user's own form, or in the other form
where the template does not render the user's form as text (the test's own probe: the
content is dropped, or printed as a Python literal). The batch's ids equal the tokens of
that text, each run of an expanded media placeholder collapsed to one token, the only
exception being the stop token appended after a last reply whose template writes no
closing token (``family_checks.with_appended_stop``).

All formats run on four families (Qwen2-VL, Gemma 3, Idefics3, GLM-4.1V: no closing
token); the ``messages`` format with media, and text-only conversations, on every family.
The ids comparison covers media rows where the processor expands a placeholder into a run
of one token (the families in ``RUN_EXPANDED``); elsewhere (Gemma 3's, Idefics3's,
InternVL's, Llama 4's, Pixtral's image structures) text-only rows.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest

import vlm_collate as vc
import vlm_collate.pipeline.encode as encode_module
from family_checks import collapse, template_closes
from helpers import make_image, png_bytes
from vlm_collate import testing
from vlm_collate.formats.conversation import conversation_of
from vlm_collate.processor.profile import profile_of
from vlm_collate.processor.render import renderer_for
from vlm_collate.testing.families import FAMILY_PROCESSORS

IMG = make_image(64, 48, seed=3)
Q, A, Q2, A2 = "What is in the picture?", "Random pixels.", "And the colours?", "All of them."
IMAGE = {"type": "image"}
DATA_URL = "data:image/png;base64," + base64.b64encode(png_bytes(IMG)).decode()


def _u(*items: Any) -> dict[str, Any]:
    items = [{"type": "text", "text": x} if isinstance(x, str) else x for x in items]
    return {"role": "user", "content": items}


ROWS: dict[str, dict[str, Any]] = {
    "messages": {
        "messages": [
            _u(IMAGE, Q),
            {"role": "assistant", "content": A},
            {"role": "user", "content": Q2},
            {"role": "assistant", "content": [{"type": "text", "text": A2}]},
        ],
        "images": [IMG],
    },
    "llava": {
        "id": "000000033471",
        "image": IMG,
        "conversations": [
            {"from": "human", "value": f"<image>\n{Q}"},
            {"from": "gpt", "value": A},
            {"from": "human", "value": Q2},
            {"from": "gpt", "value": A2},
        ],
    },
    "openai": {
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": Q},
                    {
                        "type": "image_url",
                        "image_url": {"url": DATA_URL},
                    },
                ],
            },
            {"role": "assistant", "content": A},
        ]
    },
    "cauldron": {
        "images": [IMG],
        "texts": [
            {"user": Q, "assistant": A, "source": "ai2d"},
            {"user": Q2, "assistant": A2, "source": "ai2d"},
        ],
    },
    "prompt_completion": {
        "images": [IMG],
        "prompt": [{"role": "user", "content": [IMAGE, {"type": "text", "text": Q}]}],
        "completion": [{"role": "assistant", "content": [{"type": "text", "text": A}]}],
    },
    "prompt_completion_strings": {"images": [IMG], "prompt": Q, "completion": A},
    "text_only": {
        "messages": [
            {"role": "system", "content": "You are brief."},
            {"role": "user", "content": Q},
            {"role": "assistant", "content": A},
            {"role": "user", "content": [{"type": "text", "text": Q2}]},
            {"role": "assistant", "content": A2},
        ]
    },
}

ALL_FORMATS_ON = ("qwen2_vl", "gemma3", "idefics3", "glm4v")
#: families whose processor expands an image placeholder into a run of that one token
RUN_EXPANDED = ("qwen2_vl", "qwen3_vl", "glm4v", "llava_onevision")
#: families measured under ~3 s for a case (processor build cached per session)
FAST = ("qwen2_vl", "qwen3_vl", "glm4v")

_built: dict[str, Any] = {}


def processor_of(family: str) -> Any:
    if family not in _built:
        _built[family] = FAMILY_PROCESSORS[family]()
    return _built[family]


# --------------------------------------------------------------------------- the expectation


_PROBE = "PRBQZX"


def _renders_as_text(processor: Any, role: str, form: str) -> bool:
    """Whether the template renders ``role``'s text content given in ``form`` as text (the
    test's own probe: rendered once, not as a Python literal)."""
    content: Any = _PROBE if form == "string" else [{"type": "text", "text": _PROBE}]
    messages = [{"role": "user", "content": "Hi."}, {"role": "assistant", "content": "Yes."}]
    if role == "system":
        messages.insert(0, {"role": "system", "content": content})
    else:
        at = 0 if role == "user" else 1
        messages[at] = {"role": role, "content": content}
    try:
        text = processor.apply_chat_template(messages, tokenize=False)
    except Exception:  # noqa: BLE001 - a template refusing a form raises anything
        return False
    return text.count(_PROBE) == 1 and f"'{_PROBE}'" not in text


def _as_form(content: Any, form: str) -> Any:
    if form == "list":
        return [{"type": "text", "text": content}] if isinstance(content, str) else content
    if isinstance(content, list) and all(i.get("type") == "text" for i in content):
        return "".join(i["text"] for i in content)
    return content  # media lists stay lists


def expected_messages(processor: Any, conversation: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The conversation in the user's own forms, each converted only where the template
    does not render that form of that role as text."""
    out = []
    for message in conversation:
        content = message.get("content")
        role = message["role"] if message["role"] in ("system", "user", "assistant") else "user"
        own = "string" if isinstance(content, str) else "list"
        media = isinstance(content, list) and any(i.get("type") != "text" for i in content)
        if media or _renders_as_text(processor, role, own):
            out.append(message)
        else:
            other = "list" if own == "string" else "string"
            out.append({**message, "content": _as_form(content, other)})
    return out


def rendered_texts(monkeypatch: pytest.MonkeyPatch, collator: Any, rows: list) -> tuple:
    """The batch of ``rows`` and the texts its encode step rendered (a spy on the
    placeholder check every encode step runs on the rendered texts)."""
    seen: list[list[str]] = []
    real = encode_module.check_placeholders

    def spy(profile: Any, collected: Any) -> None:
        seen.append(list(collected.texts))
        real(profile, collected)

    monkeypatch.setattr(encode_module, "check_placeholders", spy)
    batch = collator(rows)
    assert len(seen) == 1, "one encode step per batch"
    return batch, seen[0]


def check_row(monkeypatch: pytest.MonkeyPatch, family: str, case: str) -> None:
    processor = processor_of(family)
    row = ROWS[case]
    conversation = conversation_of(row, 0)
    expected = processor.apply_chat_template(
        expected_messages(processor, conversation), tokenize=False
    )
    # what the library passes is rendered the same way by the template itself
    assert renderer_for(processor)(conversation) == expected, f"{family}/{case}: renderer"
    batch, texts = rendered_texts(monkeypatch, vc.VLMCollator(processor), [row])
    assert texts == [expected], f"{family}/{case}: the encode step's text"

    has_media = any(
        isinstance(m["content"], list) and any(i.get("type") != "text" for i in m["content"])
        for m in conversation
    )
    if has_media and family not in RUN_EXPANDED:
        return
    tokenizer = getattr(processor, "tokenizer", processor)
    want = tokenizer(expected, add_special_tokens=False)["input_ids"]
    if conversation[-1]["role"] == "assistant" and not template_closes(processor):
        want = [*want, tokenizer.eos_token_id]  # the one token the template did not write
    ids = batch["input_ids"][0][batch["attention_mask"][0].bool()].tolist()
    expanded = set(profile_of(processor).media_ids)
    assert [ids[i] for i in collapse(ids, expanded)] == [
        want[i] for i in collapse(want, expanded)
    ], f"{family}/{case}: ids"


def _params(cases: list[tuple[str, str]]) -> list[Any]:
    return [
        pytest.param(f, c, marks=() if f in FAST else pytest.mark.slow, id=f"{f}-{c}")
        for f, c in cases
    ]


CASES = sorted(
    {(f, c) for f in ALL_FORMATS_ON for c in ROWS}
    | {(f, c) for f in FAMILY_PROCESSORS for c in ("messages", "text_only")}
)


@pytest.mark.parametrize(("family", "case"), _params(CASES))
def test_batch_text_is_the_templates_rendering(monkeypatch, family, case):
    check_row(monkeypatch, family, case)


# --------------------------------------------------------------------------- tool calls

TOOL_CALL = [
    {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
    {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"type": "function", "function": {"name": "get", "arguments": {"city": "Paris"}}}
        ],
    },
    {"role": "tool", "content": "sunny"},
    {"role": "assistant", "content": [{"type": "text", "text": "Sunny."}]},
]


def test_empty_content_beside_tool_calls_renders_as_the_template_does():
    """Qwen3-VL's template tests ``message.content`` for truth: ``""`` stays a string (a
    one-item list would add a ``\\n`` inference never sees)."""
    processor = testing.qwen3_vl_processor()
    expected = processor.apply_chat_template(TOOL_CALL, tokenize=False)
    assert "<|im_start|>assistant\n\n<tool_call>" not in expected
    assert renderer_for(processor)(TOOL_CALL) == expected
    batch = vc.VLMCollator(processor)([{"messages": TOOL_CALL}])
    ids = batch["input_ids"][0][batch["attention_mask"][0].bool()].tolist()
    assert processor.tokenizer.decode(ids) == expected
