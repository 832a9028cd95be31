"""The batch text is the template's own rendering of the conversation as the user gave it
(issue 19 item 2). So far: an assistant turn with ``content: ""`` beside ``tool_calls``
stays an empty string (Qwen3-VL's template tests ``message.content`` for truth; a one-item
list would add a ``\\n`` inference never sees)."""

from __future__ import annotations

from vlm_collate import VLMCollator, testing
from vlm_collate.processor.render import renderer_for

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
    processor = testing.qwen3_vl_processor()
    expected = processor.apply_chat_template(TOOL_CALL, tokenize=False)
    assert "<|im_start|>assistant\n\n<tool_call>" not in expected
    assert renderer_for(processor)(TOOL_CALL) == expected
    batch = VLMCollator(processor)([{"messages": TOOL_CALL}])
    ids = batch["input_ids"][0][batch["attention_mask"][0].bool()].tolist()
    assert processor.tokenizer.decode(ids) == expected
