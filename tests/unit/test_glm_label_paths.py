"""GLM-4.1V: the marker path, the exact path and the template's own truth agree on
multi-turn conversations, text only and with images (issue 20).

The template's truth comes from ``vlm_collate.testing.offset_targets`` (character
offsets of differential renderings), never from the labelling code. GLM-4.1V writes no
closing token: the truth of a conversation ending in a reply is read from the rendering
with one more user turn (the next turn's ``<|user|>`` closes the reply) and cut to the
rendering of the conversation itself, since ``build_labels`` labels only what the ids hold.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pytest

from helpers import make_image
from vlm_collate import build_labels, check_template
from vlm_collate.families.glm4v import glm4v_collate_fn
from vlm_collate.pipeline.labels import exact_labels
from vlm_collate.processor.render import renderer_for
from vlm_collate.testing import offset_targets
from vlm_collate.testing.families import FAMILY_PROCESSORS

IGNORE = -100
WORDS = ["the", "red", "car", "is", "parked", "near", "a", "blue", "house", "today"]


@pytest.fixture(scope="module")
def glm() -> Any:
    return FAMILY_PROCESSORS["glm4v"]()


def conversation(turns: int, seed: int, list_replies: bool = False) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    messages: list[dict[str, Any]] = []
    for k in range(turns):
        question = " ".join(rng.choice(WORDS, 8)) + f" {k}?"
        answer = " ".join(rng.choice(WORDS, 12)) + "."
        messages.append({"role": "user", "content": [{"type": "text", "text": question}]})
        content: Any = [{"type": "text", "text": answer}] if list_replies else answer
        messages.append({"role": "assistant", "content": content})
    return messages


def truth(processor: Any, messages: list[dict[str, Any]]) -> list[int]:
    """Labels of the text-only rendering of ``messages`` from the template's offsets."""
    tokenizer = processor.tokenizer
    text = renderer_for(processor)(messages)
    n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
    closed = [*messages, {"role": "user", "content": [{"type": "text", "text": "next"}]}]
    ids, targets = offset_targets(processor, closed)
    return [i if t else IGNORE for i, t in zip(ids[:n], targets[:n])]


def text_batch(processor: Any, conversations: list) -> tuple[np.ndarray, np.ndarray]:
    render = renderer_for(processor)
    enc = processor.tokenizer(
        [render(c) for c in conversations],
        add_special_tokens=False,
        padding=True,
        return_tensors="np",
    )
    return enc["input_ids"].astype(np.int64), enc["attention_mask"].astype(np.int64)


def test_glm_verifies_on_the_marker_path(glm: Any) -> None:
    report = check_template(glm)
    assert report.method == "markers", report.reason


@pytest.mark.parametrize(
    "shape", [(8, 4), (1, 10), (1, 40)], ids=["batch8x4turns", "10turns", "40turns"]
)
def test_text_only_paths_equal_template_truth(glm: Any, shape: tuple[int, int]) -> None:
    batch, turns = shape
    conversations = [conversation(turns, seed) for seed in range(batch)]
    ids, mask = text_batch(glm, conversations)
    markers = build_labels(ids, conversations, glm, attention_mask=mask).numpy()
    exact, found = exact_labels(ids, mask, conversations, glm)
    assert found.tolist() == [turns] * batch
    for r, c in enumerate(conversations):
        attended = mask[r].astype(bool)
        expected = truth(glm, c)
        assert markers[r][attended].tolist() == expected, f"row {r}: marker path"
        assert exact[r][attended].tolist() == expected, f"row {r}: exact path"
        assert (markers[r][~attended] == IGNORE).all()
        assert sum(t != IGNORE for t in expected) > turns  # every reply has targets


def test_list_replies_label_as_string_replies(glm: Any) -> None:
    """Replies given as text items are rendered as strings (the template prints list
    content as a Python literal): same ids, same labels on both paths."""
    as_list = [conversation(3, seed, list_replies=True) for seed in range(3)]
    as_str = [conversation(3, seed) for seed in range(3)]
    ids, mask = text_batch(glm, as_list)
    ids_s, _ = text_batch(glm, as_str)
    assert np.array_equal(ids, ids_s)
    markers = build_labels(ids, as_list, glm, attention_mask=mask).numpy()
    exact, _ = exact_labels(ids, mask, as_list, glm)
    assert np.array_equal(markers, exact)
    for r, c in enumerate(as_str):
        assert markers[r][mask[r].astype(bool)].tolist() == truth(glm, c)


def _with_images(seed: int) -> list[dict[str, Any]]:
    messages = conversation(3, seed)
    messages[0]["content"] = [
        {"type": "image", "image": make_image(64 + 16 * seed, 48, seed=seed)},
        *messages[0]["content"],
    ]
    messages[2]["content"] = [
        *messages[2]["content"],
        {"type": "image", "image": make_image(48, 64, seed=seed + 7)},
    ]
    return messages


def _collapsed(ids: list[int], runs: set[int]) -> list[int]:
    return [i for i, t in enumerate(ids) if not (t in runs and i > 0 and ids[i - 1] == t)]


def test_with_images_paths_equal_template_truth(glm: Any) -> None:
    conversations = [_with_images(seed) for seed in range(3)]
    batch = glm4v_collate_fn(
        [{"conversation": c} for c in conversations], glm, shift=False, close_last_reply="never"
    )
    ids = batch["input_ids"].numpy().astype(np.int64)
    mask = batch["attention_mask"].numpy().astype(np.int64)
    markers = build_labels(ids, conversations, glm, attention_mask=mask).numpy()
    exact, found = exact_labels(ids, mask, conversations, glm)
    assert found.tolist() == [3, 3, 3]
    assert np.array_equal(markers, exact)
    assert np.array_equal(markers, batch["labels"].numpy())
    image = glm.tokenizer.convert_tokens_to_ids("<|image|>")
    for r, c in enumerate(conversations):
        attended = mask[r].astype(bool)
        row, labels = ids[r][attended].tolist(), markers[r][attended].tolist()
        keep = _collapsed(row, {image})
        bare = [
            {
                **m,
                "content": [
                    {"type": i["type"]} if i["type"] != "text" else i for i in m["content"]
                ],
            }
            if isinstance(m["content"], list)
            else m
            for m in c
        ]
        assert [row[i] for i in keep] == glm.tokenizer(
            renderer_for(glm)(bare), add_special_tokens=False
        )["input_ids"], f"row {r}: ids are not the expanded rendering"
        assert [labels[i] for i in keep] == truth(glm, bare), f"row {r}"
        assert all(labels[i] == IGNORE for i, t in enumerate(row) if t == image)


def test_exact_path_warns_when_ids_hold_other_replies(
    glm: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Ids rendered from other reply text: those replies are not found, and the sample is
    named, not labelled silently."""
    given = conversation(2, 0)
    other = [dict(m) for m in given]
    other[1] = {"role": "assistant", "content": "an entirely different answer here."}
    ids, mask = text_batch(glm, [other])
    with caplog.at_level(logging.WARNING, logger="vlm_collate"):
        _, found = exact_labels(ids, mask, [given], glm)
    assert found.tolist() == [1]
    assert "sample 0" in caplog.text and "not in its input_ids" in caplog.text
