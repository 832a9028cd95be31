"""Every entry point builds its options through ``CollateOptions``: the same names, types
(numpy integers included) and ranges are checked when the collator is built, and the
same option behaves the same everywhere (``label_pad_token_id`` in packed batches too)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vlm_collate import (
    CollateError,
    CollateOptions,
    OptionError,
    PackedCollator,
    VLMCollator,
    qwen2_5_collate_fn,
)


def _examples() -> list[dict]:
    return [
        {
            "messages": [
                {"role": "user", "content": "What is two plus two?"},
                {"role": "assistant", "content": "Four."},
            ]
        },
        {
            "messages": [
                {"role": "user", "content": "Name a colour."},
                {"role": "assistant", "content": "Blue, like the sky."},
            ]
        },
    ]


def test_a_misspelt_option_is_an_option_error_not_a_type_error():
    with pytest.raises(OptionError, match="shfit"):
        CollateOptions(shfit=True)  # type: ignore[call-arg]
    with pytest.raises(OptionError, match="keyword"):
        CollateOptions(True)  # type: ignore[misc]


@pytest.mark.parametrize(
    "build",
    [
        lambda p, **o: VLMCollator(p, **o),
        lambda p, **o: PackedCollator(p, 64, **o),
        lambda p, **o: qwen2_5_collate_fn(_examples(), p, **o),
    ],
    ids=["VLMCollator", "PackedCollator", "seed-named function"],
)
def test_every_entry_point_refuses_the_same_bad_options(qwen_processor, build):
    with pytest.raises(OptionError, match="shfit"):
        build(qwen_processor, shfit=True)
    with pytest.raises(OptionError, match="on_overflow"):
        build(qwen_processor, on_overflow="cut")
    with pytest.raises(OptionError, match="label_pad_token_id"):
        build(qwen_processor, label_pad_token_id=3)


def test_packed_collator_checks_its_sizes_when_built(qwen_processor):
    with pytest.raises(OptionError, match="max_length"):
        PackedCollator(qwen_processor, 2**40)
    with pytest.raises(OptionError, match="pad_to_multiple_of"):
        PackedCollator(qwen_processor, 64, pad_to_multiple_of=0)


def test_numpy_integers_are_integers_everywhere(qwen_processor):
    length = np.int64(64)
    VLMCollator(qwen_processor, max_length=length)
    packed = PackedCollator(qwen_processor, length, pad_to_multiple_of=np.int32(8))
    batch = packed(_examples())
    assert batch["input_ids"].shape[1] % 8 == 0


def test_label_pad_token_id_holds_in_packed_batches(qwen_processor):
    packed = PackedCollator(qwen_processor, 128, label_pad_token_id=-1, rope=None)
    batch = packed(_examples())
    labels = batch["labels"]
    assert (labels == -100).sum() == 0, "a position outside the targets kept -100"
    assert (labels == -1).any() and (labels >= 0).any()
    # A loss told to ignore -1 accepts the batch as it is.
    logits = torch.zeros(*labels.shape, len(qwen_processor.tokenizer))
    F.cross_entropy(logits.flatten(0, 1), labels.flatten(), ignore_index=-1)
    # The same targets as the default labels.
    default = PackedCollator(qwen_processor, 128, rope=None)(_examples())["labels"]
    assert torch.equal(default != -100, labels != -1)


def test_an_option_error_is_a_collate_error():
    assert issubclass(OptionError, CollateError)
    assert issubclass(CollateError, ValueError)
