"""TRL prompt/completion rows (``formats/prompt_completion.py``) are labelled on the
completion: the labelled tokens are exactly the completion's reply and its end-of-turn, as
the template renders them (ground truth: ``testing.offset_targets`` of the row's
conversation, character offsets of the rendering), with the images in the prompt, in the
string and in the message-list forms, on Qwen2.5-VL and Gemma 3."""

from __future__ import annotations

import pytest

import vlm_collate as vc
from helpers import IGNORE, make_image
from vlm_collate.formats.conversation import conversation_of, format_of
from vlm_collate.testing import offset_targets, qwen2_5_vl_processor
from vlm_collate.testing.families import gemma3_processor

IMG, IMG2 = make_image(64, 48, seed=7), make_image(48, 64, seed=8)
Q, A = "What is in the picture?", "A field of random pixels."
TEXT = {"type": "text", "text": Q}

ROWS = {
    "strings": {"images": [IMG], "prompt": Q, "completion": A},
    "strings_two_images": {"images": [IMG, IMG2], "prompt": Q, "completion": A},
    "messages": {
        "images": [IMG],
        "prompt": [{"role": "user", "content": [{"type": "image"}, TEXT]}],
        "completion": [{"role": "assistant", "content": [{"type": "text", "text": A}]}],
    },
    "messages_string_content": {
        "images": [IMG],
        "prompt": [
            {"role": "system", "content": "You are brief."},
            {"role": "user", "content": [{"type": "image"}, TEXT]},
        ],
        "completion": [{"role": "assistant", "content": A}],
    },
}
PROCESSORS = {"qwen2_5_vl": qwen2_5_vl_processor, "gemma3": gemma3_processor}
_built: dict = {}


def processor_of(name):
    if name not in _built:
        _built[name] = PROCESSORS[name]()
    return _built[name]


def labelled_text(tokenizer, ids, labels):
    return tokenizer.decode([t for t, label in zip(ids, labels) if label != IGNORE])


@pytest.mark.slow
@pytest.mark.parametrize("name", list(PROCESSORS))
@pytest.mark.parametrize("case", list(ROWS))
def test_prompt_completion_rows_are_labelled_on_the_completion(name, case):
    processor = processor_of(name)
    tokenizer = processor.tokenizer
    row = ROWS[case]
    assert format_of(row) == "prompt_completion"
    conversation = conversation_of(row, 0)
    assert [m["role"] for m in conversation][-1] == "assistant"
    images = [i for m in conversation if isinstance(m["content"], list)
              for i in m["content"] if i.get("type") == "image"]  # fmt: skip
    assert len(images) == len(row["images"])
    truth_ids, truth = offset_targets(processor, conversation)
    expected = labelled_text(
        tokenizer, truth_ids, [t if x else IGNORE for t, x in zip(truth_ids, truth)]
    )
    assert expected.startswith(A), expected  # the completion, then its end-of-turn
    assert Q not in expected

    batch = vc.VLMCollator(processor)([row])
    mask = batch["attention_mask"][0].bool()
    ids, labels = batch["input_ids"][0][mask].tolist(), batch["labels"][0][mask].tolist()
    assert labelled_text(tokenizer, ids, labels) == expected
    labelled = [i for i, label in enumerate(labels) if label != IGNORE]
    assert labelled == list(range(labelled[0], labelled[-1] + 1)), "one run: the completion"
    assert all(labels[i] == ids[i] for i in labelled)
    assert batch.get("pixel_values") is not None


def test_a_prompts_own_replies_are_not_labelled():
    processor = processor_of("qwen2_5_vl")
    prompt = [
        {"role": "user", "content": [{"type": "image"}, TEXT]},
        {"role": "assistant", "content": "Pixels."},
        {"role": "user", "content": "Say more."},
    ]
    row = {"images": [IMG], "prompt": prompt, "completion": [{"role": "assistant", "content": A}]}
    conversation = conversation_of(row, 0)
    assert conversation[1]["train"] is False
    truth_ids, truth = offset_targets(processor, conversation)
    runs = labelled_text(
        processor.tokenizer, truth_ids, [t if x else IGNORE for t, x in zip(truth_ids, truth)]
    )
    assert runs.startswith("Pixels.") and A in runs  # both replies rendered and closed
    batch = vc.VLMCollator(processor)([row])
    mask = batch["attention_mask"][0].bool()
    ids, labels = batch["input_ids"][0][mask].tolist(), batch["labels"][0][mask].tolist()
    assert labelled_text(processor.tokenizer, ids, labels) == runs[len("Pixels.<|im_end|>") :]
    kept = dict(row, prompt=[prompt[0], dict(prompt[1], train=True), prompt[2]])
    batch = vc.VLMCollator(processor)([kept])
    ids, labels = batch["input_ids"][0][mask].tolist(), batch["labels"][0][mask].tolist()
    assert labelled_text(processor.tokenizer, ids, labels) == runs
