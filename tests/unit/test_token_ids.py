"""``batch_token_ids`` (processor/tokens.py) against the tokenizer's own call.

The fast paths tokenize a batch with ``batch_token_ids``, which reads the ids straight
from the Rust backend of transformers' fast tokenizer class. For the tokenizer of every
family processor ``vlm_collate.testing`` builds (real vocabularies), on texts with
special tokens, media placeholders, non-ASCII and empty text, with and without added
special tokens, its ids are ``tokenizer(texts)["input_ids"]`` exactly. A subclass that
overrides the encode path, a backend with truncation set, and a tokenizer told to split
special tokens are served by (or as) the tokenizer's own call; a backend whose ids
differ is caught by the self-check and turned off.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import pytest

from vlm_collate import testing
from vlm_collate.processor import tokens
from vlm_collate.processor.tokens import SELF_CHECKS, batch_token_ids


@functools.cache
def _tokenizer(name: str) -> Any:
    return testing.FAMILY_PROCESSORS[name]().tokenizer


def _texts(tokenizer: Any) -> list[str]:
    specials = [t for t in tokenizer.all_special_tokens if t][:4]
    added = [str(t) for t in list(tokenizer.added_tokens_decoder.values())[-3:]]
    return [
        "Describe the picture, please.",
        f"{''.join(specials)}user\nWhat is {added[0]} doing?{specials[0]}",
        "  leading spaces, trailing newline\n",
        "Ünïcödé: 你好, мир, 🙂 — and tabs\tinside",
        "",
        " ".join(added) + " between " + " ".join(specials),
    ]


@pytest.mark.parametrize("name", sorted(testing.FAMILY_PROCESSORS))
@pytest.mark.parametrize("add_special_tokens", [True, False])
def test_ids_equal_the_tokenizer_call(name: str, add_special_tokens: bool) -> None:
    tokenizer = _tokenizer(name)
    texts = _texts(tokenizer)
    expected = tokenizer(texts, add_special_tokens=add_special_tokens)["input_ids"]
    assert tokens._direct_encoder(tokenizer) is not None  # every family's takes it
    for _ in range(SELF_CHECKS + 2):  # self-checked calls, then direct ones
        assert batch_token_ids(tokenizer, texts, add_special_tokens) == expected


def test_an_overridden_encode_path_is_called(monkeypatch: pytest.MonkeyPatch) -> None:
    base = type(_tokenizer("qwen2_vl"))
    calls = []

    class Shouting(base):  # type: ignore[misc, valid-type]
        def _encode_plus(self, text: Any, *args: Any, **kwargs: Any) -> Any:
            calls.append(text)
            upper = [t.upper() for t in text] if isinstance(text, list) else text.upper()
            return super()._encode_plus(upper, *args, **kwargs)

    tokenizer = _tokenizer("qwen2_vl")
    shouting = Shouting.__new__(Shouting)
    shouting.__dict__.update(tokenizer.__dict__)
    assert tokens._direct_encoder(shouting) is None
    ids = batch_token_ids(shouting, ["quiet words"], False)
    assert calls and ids == tokenizer(["QUIET WORDS"], add_special_tokens=False)["input_ids"]


def test_a_tokenizer_with_an_input_mode_hook_or_no_hash_is_called() -> None:
    base = type(_tokenizer("qwen2_vl"))
    switched = []

    class Translating(base):  # type: ignore[misc, valid-type]
        def _switch_to_input_mode(self) -> None:  # as NLLB's, MBart's and Marian's
            switched.append(True)

    class Unhashable(base):  # type: ignore[misc, valid-type]
        def __eq__(self, other: object) -> bool:
            return self is other

    assert Unhashable.__hash__ is None
    tokenizer = _tokenizer("qwen2_vl")
    expected = tokenizer(["some words"], add_special_tokens=False)["input_ids"]
    for kind in (Translating, Unhashable):
        other = kind.__new__(kind)
        other.__dict__.update(tokenizer.__dict__)
        assert tokens._direct_encoder(other) is None
        assert batch_token_ids(other, ["some words"], False) == expected


def test_a_backend_with_truncation_set_gives_the_full_ids() -> None:
    tokenizer = testing.FAMILY_PROCESSORS["qwen2_vl"]().tokenizer
    texts = ["one two three four five six seven eight nine ten"]
    full = tokenizer(texts, add_special_tokens=False)["input_ids"]
    tokenizer._tokenizer.enable_truncation(3)
    assert tokens._direct_encoder(tokenizer) is None
    assert batch_token_ids(tokenizer, texts, False) == full


def test_split_special_tokens_is_honoured() -> None:
    tokenizer = testing.FAMILY_PROCESSORS["qwen2_vl"]().tokenizer
    texts = ["<|im_start|>user\nhi<|im_end|>"]
    whole = batch_token_ids(tokenizer, texts, False)
    tokenizer.split_special_tokens = True
    split = tokenizer(texts, add_special_tokens=False)["input_ids"]
    assert split != whole  # the markers are split into plain text tokens
    for _ in range(SELF_CHECKS + 2):
        assert batch_token_ids(tokenizer, texts, False) == split


def test_a_backend_that_differs_is_turned_off(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    tokenizer = testing.FAMILY_PROCESSORS["qwen2_vl"]().tokenizer
    texts = ["a few words", "more words here"]
    expected = tokenizer(texts, add_special_tokens=False)["input_ids"]

    class Off:
        def __init__(self, ids: list[int]) -> None:
            self.ids = ids

    def wrong(batch: list[str], add_special_tokens: bool) -> list[Off]:
        return [Off([0]) for _ in batch]

    monkeypatch.setattr(tokens, "_direct_encoder", lambda t: wrong)
    with caplog.at_level(logging.WARNING, logger=tokens.__name__):
        assert batch_token_ids(tokenizer, texts, False) == expected
    assert "differ" in caplog.text
    assert tokens._direct_state[tokenizer] == -1
    monkeypatch.undo()
    assert tokens._direct_encoder(tokenizer) is None  # off for this tokenizer from now on
    assert batch_token_ids(tokenizer, texts, False) == expected
