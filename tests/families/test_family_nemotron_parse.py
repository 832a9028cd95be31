"""nemotron_parse_collate_fn on the Nemotron-Parse test stand-in (real Donut image processor)."""

from __future__ import annotations

import pytest
import torch

from family_checks import IGNORE, assert_shift_consistent, assistant, make_image, user
from vlm_collate import COLLATE_FNS, get_collate_fn, nemotron_parse_collate_fn
from vlm_collate.families.nemotron_parse import DEFAULT_TASK_PROMPT
from vlm_collate.testing import NemotronParseStandIn, nemotron_parse_processor


@pytest.fixture(scope="module")
def processor() -> NemotronParseStandIn:
    return nemotron_parse_processor()


def page(k: int) -> dict:
    return {"type": "image", "image": make_image(40 + 10 * k, 60, seed=k)}


REPLIES = ["# Title\n\nA table: 12 | 34", "", "<predict_bbox> is literal here: yes", "Page two."]


@pytest.fixture(scope="module")
def cases() -> list[list[dict]]:
    echo = [user(page(2), "Parse: yes"), assistant(REPLIES[2])]
    two_turns = [user(page(3), "Parse"), assistant(REPLIES[3]), user("More"), assistant("ignored")]
    return [
        [user(page(0), "Parse the page."), assistant(REPLIES[0])],
        [user(page(1)), assistant(REPLIES[1])],
        echo,
        two_turns,
    ]


def ground_truth(
    processor, reply: str, prompt: str = DEFAULT_TASK_PROMPT
) -> tuple[list[int], list[bool]]:
    """Ids of prompt + reply + eos and which are targets, from character offsets."""
    tok = processor.tokenizer
    text = prompt + reply + tok.eos_token
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    return enc["input_ids"], [start >= len(prompt) for start, _ in enc["offset_mapping"]]


def collate(processor, conversations, **options):
    examples = [{"conversation": c} for c in conversations]
    return nemotron_parse_collate_fn(examples, processor, **options)


@pytest.fixture(scope="module")
def unshifted(processor, cases):
    return collate(processor, cases, shift=False)


def test_registry_resolves_nemotron_parse(processor):
    assert get_collate_fn(processor) is nemotron_parse_collate_fn
    assert COLLATE_FNS["NemotronParseProcessor"] is nemotron_parse_collate_fn


def test_prompt_ignored_reply_and_end_token_targets(processor, unshifted):
    for row, reply in enumerate(REPLIES):
        mask = unshifted["attention_mask"][row].bool()
        ids = unshifted["input_ids"][row][mask].tolist()
        labels = unshifted["labels"][row][mask].tolist()
        gt_ids, gt_targets = ground_truth(processor, reply)
        assert ids == gt_ids
        assert [label != IGNORE for label in labels] == gt_targets
        assert labels[-1] == processor.tokenizer.eos_token_id
        assert (unshifted["labels"][row][~mask] == IGNORE).all()


def test_custom_task_prompt(processor, cases):
    prompt = "</s><s><predict_no_bbox><output_plain>"
    batch = collate(processor, cases[:1], task_prompt=prompt, shift=False)
    gt_ids, gt_targets = ground_truth(processor, REPLIES[0], prompt)
    assert batch["input_ids"][0].tolist() == gt_ids
    assert (batch["labels"][0] != IGNORE).tolist() == gt_targets


def test_prompt_merging_with_the_reply_is_an_error(processor, cases):
    with pytest.raises(ValueError, match="sample 0: the task prompt's tokens merge"):
        collate(processor, [[user(page(0)), assistant("image")]], task_prompt="<output_plain> ")


def test_keys_shapes_dtypes(unshifted, cases):
    assert set(unshifted) == {
        "pixel_values",
        "input_ids",
        "attention_mask",
        "labels",
        "decoder_input_ids",
        "decoder_attention_mask",
        "n_images_per_sample",
    }
    assert unshifted["pixel_values"].dtype == torch.bfloat16
    assert unshifted["pixel_values"].shape == (len(cases), 3, 64, 48)
    assert unshifted["n_images_per_sample"].tolist() == [1] * len(cases)
    for key in (
        "input_ids",
        "attention_mask",
        "labels",
        "decoder_input_ids",
        "decoder_attention_mask",
    ):
        assert unshifted[key].dtype == torch.int64
        assert unshifted[key].shape == unshifted["input_ids"].shape


def test_pixel_dtype_parameter(processor, cases):
    assert (
        collate(processor, cases[:1], pixel_dtype=torch.float32)["pixel_values"].dtype
        == torch.float32
    )
    assert collate(processor, cases[:1], pixel_dtype=None)["pixel_values"].dtype == torch.float32


def test_decoder_inputs_shifted_as_the_seed(processor, cases, unshifted):
    """Shifted (default): position i reads decoder_input_ids[i] and predicts labels[i]."""
    shifted = collate(processor, cases)
    assert_shift_consistent(
        shifted, unshifted, skip=("decoder_input_ids", "decoder_attention_mask")
    )
    assert torch.equal(shifted["decoder_input_ids"], unshifted["input_ids"][:, :-1])
    assert torch.equal(shifted["decoder_attention_mask"], unshifted["attention_mask"][:, :-1])


def test_decoder_inputs_unshifted_start_token_first(processor, unshifted):
    """shift=False: Hugging Face style, decoder inputs are input_ids shifted right."""
    start = processor.tokenizer.bos_token_id
    ids, mask = unshifted["input_ids"], unshifted["attention_mask"]
    assert (unshifted["decoder_input_ids"][:, 0] == start).all()
    assert torch.equal(unshifted["decoder_input_ids"][:, 1:], ids[:, :-1])
    assert torch.equal(unshifted["decoder_attention_mask"][:, 1:], mask[:, :-1])


def test_sample_without_image_is_a_clear_error(processor, cases):
    with pytest.raises(ValueError, match="sample 1 has 0 images; Nemotron-Parse reads exactly one"):
        collate(processor, [cases[0], [user("no page"), assistant("x")]])
    with pytest.raises(ValueError, match="sample 0 has 2 images"):
        collate(processor, [[user(page(0), page(1)), assistant("x")]])


def test_max_length_truncates_the_reply(processor, cases):
    full = collate(processor, cases[:1], shift=False)
    batch = collate(processor, cases[:1], shift=False, max_length=12, on_overflow="truncate")
    assert batch["input_ids"].shape == (1, 12) and batch.report.truncated == [0]
    assert torch.equal(batch["labels"], full["labels"][:, :12])
    padded = collate(processor, cases[:1], max_length=64, pad_to_max_length=True)
    assert padded["decoder_input_ids"].shape == (1, 64)
    assert padded["decoder_input_ids"][0, -1] == processor.tokenizer.pad_token_id
