"""Every reply learns to stop: on templates with no closing token of their own (GLM-4.1V,
LLaVA 1.5) the stop token is appended after the last reply and labelled; a reply that
another turn follows keeps the next turn's opening special token as its target; the
appended token is counted by max_length and LengthEstimator. Ground truth: the template's
own rendering (differential rendering, processor/render.py) and, where the template has
``{% generation %}`` tags, transformers' ``return_assistant_tokens_mask``."""

from __future__ import annotations

import numpy as np
import pytest
from transformers import CLIPImageProcessor, GenerationConfig, LlavaProcessor

from vlm_collate import LengthEstimator, SampleTooLongError, VLMCollator
from vlm_collate.pipeline.loss_policies import reply_closing
from vlm_collate.processor.profile import profile_of
from vlm_collate.processor.render import rendered_replies, renderer_for, token_targets
from vlm_collate.testing.builders import qwen2_tokenizer
from vlm_collate.testing.families import glm4v_processor
from vlm_collate.testing.vocabularies import template_text

# llava-hf/llava-1.5-7b-hf chat_template.json, as published (source named in the file).
LLAVA_1_5_TEMPLATE = template_text("llava_1_5")


@pytest.fixture(scope="module")
def glm():
    return glm4v_processor()


@pytest.fixture(scope="module")
def llava15():
    tokenizer = qwen2_tokenizer(["<image>"])
    return LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28}
        ),
        tokenizer=tokenizer,
        chat_template=LLAVA_1_5_TEMPLATE,
        patch_size=14,
        vision_feature_select_strategy="default",
    )


def _text(role: str, text: str) -> dict:
    return {"role": role, "content": [{"type": "text", "text": text}]}


SINGLE = [_text("user", "What is shown here?"), _text("assistant", "A red car.")]
MULTI = [
    _text("user", "What is shown here?"),
    _text("assistant", "A red car."),
    _text("user", "And the colour?"),
    _text("assistant", "Red, mostly."),
    _text("user", "Count them."),
    _text("assistant", "Three."),
]


def _truth(processor, conversation):
    """Token ids of the rendering and its targets, by differential rendering."""
    profile = profile_of(processor)
    rendered = rendered_replies(renderer_for(profile), conversation)
    return token_targets(
        profile.tokenizer, rendered, profile.special_ids, frozenset(profile.media_ids)
    )


def _row(batch, r=0):
    mask = batch["attention_mask"][r].bool()
    return batch["input_ids"][r][mask].tolist(), batch["labels"][r][mask].tolist()


@pytest.mark.parametrize("conversation", [SINGLE, MULTI], ids=["single", "multi"])
def test_glm_appends_and_labels_the_stop_after_the_last_reply(glm, conversation):
    eos = glm.tokenizer.eos_token_id
    ids, labels = _row(VLMCollator(glm)([{"messages": conversation}]))
    truth = _truth(glm, conversation)
    # The rendered text exactly, then one token the template did not write: the eos.
    assert ids[:-1] == truth.ids and ids[-1] == eos
    expected = [t if keep else -100 for t, keep in zip(truth.ids, truth.targets)] + [eos]
    assert labels == expected
    assert not reply_closing(glm).closes


def test_glm_every_reply_has_a_stop_target(glm):
    ids, labels = _row(VLMCollator(glm)([{"messages": MULTI}]))
    specials = profile_of(glm).special_ids
    targets = [i for i, label in enumerate(labels) if label != -100]
    runs = np.split(targets, np.flatnonzero(np.diff(targets) > 1) + 1)
    assert len(runs) == 3  # one per reply
    stops = [ids[run[-1]] for run in runs]
    user = glm.tokenizer.convert_tokens_to_ids("<|user|>")
    # After a reply another turn follows: the next turn's opener (one of GLM's stop tokens).
    assert stops[:2] == [user, user] and stops[2] == glm.tokenizer.eos_token_id
    assert all(s in specials for s in stops)


def test_never_trains_exactly_the_rendered_text(glm):
    ids, labels = _row(VLMCollator(glm, close_last_reply="never")([{"messages": SINGLE}]))
    truth = _truth(glm, SINGLE)
    assert ids == truth.ids
    assert labels == [t if keep else -100 for t, keep in zip(truth.ids, truth.targets)]


def test_a_given_stop_token_or_generation_config(glm):
    user = glm.tokenizer.convert_tokens_to_ids("<|user|>")
    observation = glm.tokenizer.convert_tokens_to_ids("<|observation|>")
    for option in (user, GenerationConfig(eos_token_id=[user, observation]), [user]):
        ids, labels = _row(VLMCollator(glm, close_last_reply=option)([{"messages": SINGLE}]))
        assert ids[-1] == user and labels[-1] == user


def test_no_stop_after_a_trailing_user_turn_or_on_a_closing_template(glm, qwen_processor):
    ending_with_user = [*SINGLE, _text("user", "Thanks.")]
    ids, _ = _row(VLMCollator(glm)([{"messages": ending_with_user}]))
    assert ids == _truth(glm, ending_with_user).ids
    assert reply_closing(qwen_processor).closes
    ids, labels = _row(VLMCollator(qwen_processor)([{"messages": SINGLE}]))
    truth = _truth(qwen_processor, SINGLE)
    assert ids == truth.ids  # <|im_end|> closes the reply: nothing appended
    assert labels == [t if keep else -100 for t, keep in zip(truth.ids, truth.targets)]


def test_rows_of_a_batch_and_padding(glm):
    eos = glm.tokenizer.eos_token_id
    batch = VLMCollator(glm)([{"messages": MULTI}, {"messages": SINGLE}])
    for r, conversation in enumerate((MULTI, SINGLE)):
        ids, labels = _row(batch, r)
        assert ids[:-1] == _truth(glm, conversation).ids and ids[-1] == eos and labels[-1] == eos
    assert int(batch["attention_mask"][0].sum()) == batch["input_ids"].shape[1]


def test_max_length_and_the_length_estimator_count_the_stop(glm):
    n = len(_truth(glm, SINGLE).ids)
    assert LengthEstimator(glm)({"messages": SINGLE}) == n + 1
    assert LengthEstimator(glm, close_last_reply="never")({"messages": SINGLE}) == n
    with pytest.raises(SampleTooLongError):
        VLMCollator(glm, max_length=n)([{"messages": SINGLE}])
    batch = VLMCollator(glm, max_length=n + 1)([{"messages": SINGLE}])
    assert batch["input_ids"].shape[1] == n + 1
    # Truncation cuts the appended token first, and the reply keeps its surviving tokens.
    cut = VLMCollator(glm, max_length=n, on_overflow="truncate")([{"messages": SINGLE}])
    ids, labels = _row(cut)
    assert ids == _truth(glm, SINGLE).ids and labels[-1] != glm.tokenizer.eos_token_id


@pytest.mark.parametrize("conversation", [SINGLE, MULTI], ids=["single", "multi"])
def test_llava_1_5_last_reply_closed_inside_the_generation_mask(llava15, conversation):
    eos = llava15.tokenizer.eos_token_id
    ids, labels = _row(VLMCollator(llava15)([{"messages": conversation}]))
    assert ids[-1] == eos and labels[-1] == eos
    # The second oracle: transformers' assistant mask from the template's generation tags.
    out = llava15.apply_chat_template(
        conversation, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
    )
    mask = np.asarray(out["assistant_masks"]).reshape(-1).tolist()
    assert np.asarray(out["input_ids"]).reshape(-1).tolist() == ids[:-1]
    targets = [i for i, label in enumerate(labels[:-1]) if label != -100]
    assert targets and all(mask[i] for i in targets)
    # The mask holds no more than the targets and, after a reply another turn follows,
    # the token that merges the block's trailing ' ' with the next turn (' USER').
    extra = [i for i, m in enumerate(mask) if m and i not in targets]
    assert all(i - 1 in targets and ids[i] not in llava15.tokenizer.all_special_ids for i in extra)
    assert len(extra) == sum(m["role"] == "assistant" for m in conversation) - 1
    assert "LLaVA" not in reply_closing(llava15).describe()  # a sentence, not a name
    assert not reply_closing(llava15).closes


@pytest.mark.parametrize("trailer", ["\n[DONE]", "\n"], ids=["text", "whitespace"])
def test_text_after_the_last_turn_is_not_a_target(trailer):
    """A template with no closing token that writes text after the whole conversation: the
    last reply and the appended stop are targets, the template's trailing text is not
    (whitespace only is, as it is before a next turn's opener), on whichever path the
    template's markers verify."""
    processor = glm4v_processor()
    processor.chat_template = processor.chat_template + "{{ " + repr(trailer) + " }}"
    eos = processor.tokenizer.eos_token_id
    conversation = [  # string content: GLM-4.1V prints an assistant list as a literal
        {"role": "user", "content": "What is shown here?"},
        {"role": "assistant", "content": "A red car."},
    ]
    ids, labels = _row(VLMCollator(processor)([{"messages": conversation}]))
    rendered = processor.apply_chat_template(conversation, tokenize=False)
    assert rendered.endswith("A red car." + trailer)
    truth = processor.tokenizer(rendered, add_special_tokens=False)["input_ids"]
    assert ids == [*truth, eos]
    reply = processor.tokenizer("A red car.", add_special_tokens=False)["input_ids"]
    tail = processor.tokenizer(trailer, add_special_tokens=False)["input_ids"]
    assert ids[-1 - len(tail) - len(reply) : -1 - len(tail)] == reply
    targets = [t for t, label in zip(ids, labels) if label != -100]
    expected_tail = tail if not trailer.strip() else []
    assert targets == [*reply, *expected_tail, eos]
