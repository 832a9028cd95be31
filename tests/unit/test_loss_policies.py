"""Loss policies against the template's own rendering: ``train_on`` ("assistant", "last",
"all", roles), per-message ``train`` and ``weight`` (``loss_weights``), and
:func:`vlm_collate.weighted_loss`. Ground truth: ``testing.offset_targets`` (assistant
replies, one run of targets each) and differential rendering spans (processor/render.py)
for other roles."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vlm_collate import OptionError, PackedCollator, VLMCollator, weighted_loss
from vlm_collate.processor.profile import profile_of
from vlm_collate.processor.render import (
    RenderedConversation,
    content_span,
    renderer_for,
    token_targets,
)
from vlm_collate.testing import offset_targets

CONVERSATION = [
    {"role": "system", "content": "You are brief."},
    {"role": "user", "content": "What is shown here?"},
    {"role": "assistant", "content": "A red car."},
    {"role": "user", "content": "And the colour?"},
    {"role": "assistant", "content": "Red, mostly."},
    {"role": "user", "content": "Count them."},
    {"role": "assistant", "content": "Three."},
]


def _row(batch, key="labels", r=0):
    mask = batch["attention_mask"][r].bool()
    return batch[key][r][mask].tolist()


def _reply_runs(processor, conversation):
    """Per assistant message, the positions of its targets (offset_targets' runs)."""
    ids, targets = offset_targets(processor, conversation)
    at = np.flatnonzero(targets)
    runs = np.split(at, np.flatnonzero(np.diff(at) > 1) + 1)
    assert len(runs) == sum(m["role"] == "assistant" for m in conversation)
    return ids, runs


def _expected(ids, positions):
    out = [-100] * len(ids)
    for i in positions:
        out[i] = ids[i]
    return out


def test_default_and_last(qwen_processor):
    ids, runs = _reply_runs(qwen_processor, CONVERSATION)
    batch = VLMCollator(qwen_processor)([{"messages": CONVERSATION}])
    assert _row(batch) == _expected(ids, np.concatenate(runs))
    assert "loss_weights" not in batch
    last = VLMCollator(qwen_processor, train_on="last")([{"messages": CONVERSATION}])
    assert _row(last) == _expected(ids, runs[-1])


def test_train_flag_overrides_the_role(qwen_processor):
    messages = [dict(m) for m in CONVERSATION]
    messages[2]["train"] = False
    ids, runs = _reply_runs(qwen_processor, CONVERSATION)
    batch = VLMCollator(qwen_processor)([{"messages": messages}])
    assert _row(batch) == _expected(ids, np.concatenate(runs[1:]))
    messages = [dict(m) for m in CONVERSATION]
    messages[4]["train"] = True
    batch = VLMCollator(qwen_processor, train_on="last")([{"messages": messages}])
    assert _row(batch) == _expected(ids, np.concatenate(runs[1:]))


def _role_truth(processor, conversation, roles):
    """Targets of the messages of ``roles`` by differential rendering: each one's content
    span and the end-of-turn after it."""
    profile = profile_of(processor)
    render = renderer_for(profile)
    full = render(conversation)
    spans = [
        content_span(render, conversation, k, full)
        for k, m in enumerate(conversation)
        if m["role"] in roles
    ]
    truth = token_targets(profile.tokenizer, RenderedConversation(full, spans), profile.special_ids)
    return truth.ids, [t if keep else -100 for t, keep in zip(truth.ids, truth.targets)]


@pytest.mark.parametrize("roles", [("user",), ("user", "assistant"), ("system", "assistant")])
def test_roles(qwen_processor, roles):
    ids, expected = _role_truth(qwen_processor, CONVERSATION, roles)
    batch = VLMCollator(qwen_processor, train_on=list(roles))([{"messages": CONVERSATION}])
    assert _row(batch, "input_ids") == ids
    assert _row(batch) == expected
    if roles == ("user",):  # never an assistant reply
        _, runs = _reply_runs(qwen_processor, CONVERSATION)
        assert all(_row(batch)[i] == -100 for i in np.concatenate(runs))


def test_all_trains_every_token_but_media(qwen_processor):
    from helpers import image_item

    conversation = [
        {"role": "user", "content": [image_item(), {"type": "text", "text": "Caption?"}]},
        {"role": "assistant", "content": "A red car."},
    ]
    batch = VLMCollator(qwen_processor, train_on="all")([{"messages": conversation}])
    ids, labels = _row(batch, "input_ids"), _row(batch)
    media = set(profile_of(qwen_processor).media_ids)
    assert any(i in media for i in ids)
    assert labels == [-100 if i in media else i for i in ids]


def test_weights(qwen_processor):
    messages = [dict(m) for m in CONVERSATION]
    messages[2]["weight"] = 0.5
    messages[6]["weight"] = 2.0
    ids, runs = _reply_runs(qwen_processor, CONVERSATION)
    batch = VLMCollator(qwen_processor)([{"messages": messages}, {"messages": CONVERSATION}])
    weights = np.array(_row(batch, "loss_weights"))
    expected = np.zeros(len(ids))
    for run, w in zip(runs, (0.5, 1.0, 2.0)):
        expected[run] = w
    assert np.allclose(weights, expected)
    assert np.allclose(_row(batch, "loss_weights", 1), (np.array(_row(batch, r=1)) != -100))
    assert batch["loss_weights"].shape == batch["labels"].shape
    # A weight of 0 trains nothing of that message.
    messages[4]["weight"] = 0
    zero = VLMCollator(qwen_processor)([{"messages": messages}])
    assert _row(zero) == _expected(ids, np.concatenate([runs[0], runs[2]]))


def test_weights_shift_pad_and_pack_with_labels(qwen_processor):
    messages = [dict(m) for m in CONVERSATION]
    messages[4]["weight"] = 3.0
    rows = [{"messages": messages}, {"messages": CONVERSATION[:3]}]
    for batch in (
        VLMCollator(qwen_processor, shift=True, pad_to_multiple_of=16)(rows),
        PackedCollator(VLMCollator(qwen_processor), max_length=256)(rows),
    ):
        labels, weights = batch["labels"], batch["loss_weights"]
        assert weights.shape == labels.shape
        assert bool(((weights > 0) == (labels != -100)).all())
        assert sorted(set(weights[weights > 0].tolist())) == [1.0, 3.0]


def test_bad_fields_and_options(qwen_processor):
    for bad in ({"weight": -1.0}, {"weight": "2"}, {"train": "yes"}, {"weight": float("nan")}):
        messages = [dict(m) for m in CONVERSATION]
        messages[2].update(bad)
        with pytest.raises(Exception, match="message 2"):
            VLMCollator(qwen_processor)([{"messages": messages}])
    for option in ("assistants", [], [1]):
        with pytest.raises(OptionError, match="train_on"):
            VLMCollator(qwen_processor, train_on=option)


def test_weighted_loss():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 11)
    labels = torch.tensor([[-100, 3, 4, -100, 5, 6], [-100, -100, 1, 2, -100, -100]])
    plain = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1), ignore_index=-100
    )
    assert torch.allclose(weighted_loss(logits, {"labels": labels}), plain)
    ones = (labels != -100).float()
    assert torch.allclose(
        weighted_loss(logits, {"labels": labels, "loss_weights": 2 * ones}), 2 * plain
    )
    shifted = {"labels": labels[:, 1:], "shift_labels": labels[:, 1:], "loss_weights": ones[:, 1:]}
    assert torch.allclose(weighted_loss(logits[:, :-1], shifted), plain)
