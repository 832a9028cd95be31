"""Synthetic conversations on the real Qwen2 vocabulary, with exact token lengths.

Words are made up from syllables (plus a few short English words that fill the
last tokens of a budget). With the Qwen2 pre-tokenizer every word (with its
leading space), comma and period is its own pre-token, so the token count of a
message is the sum of the counts of its pieces: a conversation can be built to
an exact length and then checked against the tokenizer.
"""

from __future__ import annotations

import functools
import random
from typing import Any

import numpy as np
from PIL import Image

_SYLLABLE_TEXT = (
    "ka lo mi ren tor vel san dri qua bel nox fen ith ul gra pim sor dak wen zu "
    "cal mar tis ber vo hen lux pra dom sil kri fa nel os tam rhu vin ger ap li"
)
_SYLLABLES = _SYLLABLE_TEXT.split()
_SHORT_TEXT = "a the of and to in is on as at by or it an be"
_SHORT_WORDS = _SHORT_TEXT.split()
_MESSAGE_OVERHEAD = 5  # <|im_start|> role \n ... <|im_end|> \n


@functools.lru_cache(maxsize=1)
def word_list(size: int = 400, seed: int = 1234) -> tuple[str, ...]:
    """``size`` made-up words of one to three syllables (deterministic)."""
    rng = random.Random(seed)
    words: set[str] = set()
    while len(words) < size:
        words.add("".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(1, 3))))
    return tuple(sorted(words))


class TextMaker:
    """Random sentences with an exact token count under ``tokenizer``."""

    def __init__(self, tokenizer: Any, seed: int = 0):
        self.tokenizer = tokenizer
        self.rng = random.Random(seed)
        self._cost: dict[str, int] = {}
        self.words = word_list()

    def cost(self, piece: str) -> int:
        if piece not in self._cost:
            self._cost[piece] = len(self.tokenizer.encode(piece, add_special_tokens=False))
        return self._cost[piece]

    def text(self, tokens: int) -> str:
        """A message body of exactly ``tokens`` tokens (when rendered after a newline)."""
        pieces: list[str] = []
        left, sentence = tokens, 0
        while left > 0:
            word = self.rng.choice(self.words)
            if sentence == 0:
                word = word.capitalize()
            piece = word if not pieces else " " + word
            if self.cost(piece) > left:
                piece = self.rng.choice(_SHORT_WORDS)
                piece = piece if not pieces else " " + piece
            pieces.append(piece)
            left -= self.cost(piece)
            sentence += 1
            if left > 0 and sentence >= self.rng.randint(6, 16):
                punct = "." if self.rng.random() < 0.7 else ","
                pieces.append(punct)
                left -= self.cost(punct)
                sentence = 0 if punct == "." else sentence
        return "".join(pieces)

    def conversation(self, tokens: int, turns: int) -> list[dict[str, Any]]:
        """User/assistant ``turns`` whose ChatML rendering is ``tokens`` tokens long."""
        messages = 2 * turns
        body = tokens - _MESSAGE_OVERHEAD * messages
        if body < messages:
            raise ValueError(f"{tokens} tokens is too short for {turns} turns")
        weights = [self.rng.uniform(0.5, 1.5) for _ in range(messages)]
        scale = body / sum(weights)
        sizes = [max(1, int(w * scale)) for w in weights]
        sizes[-1] += body - sum(sizes)
        if sizes[-1] < 1:
            sizes = [body // messages] * messages
            sizes[-1] += body - sum(sizes)
        return [
            {"role": "user" if k % 2 == 0 else "assistant", "content": self.text(n)}
            for k, n in enumerate(sizes)
        ]


def render(tokenizer: Any, conversation: list[dict[str, Any]]) -> str:
    return tokenizer.apply_chat_template(conversation, tokenize=False)


def label_batch(tokenizer: Any, batch: int, length: int, turns: int, seed: int = 0):
    """``(input_ids (B, L), attention_mask (B, L), conversations)``: text-only rows of
    90-100% of ``length`` tokens (the first exactly ``length``), right-padded to ``length``."""
    maker = TextMaker(tokenizer, seed=seed)
    rng = random.Random(seed + 1)
    pad = tokenizer.pad_token_id
    ids = np.full((batch, length), pad, dtype=np.int64)
    mask = np.zeros((batch, length), dtype=np.int64)
    conversations = []
    for b in range(batch):
        target = length if b == 0 else rng.randint(int(length * 0.9), length)
        conversation = maker.conversation(target, turns)
        row = tokenizer.encode(render(tokenizer, conversation), add_special_tokens=False)
        if len(row) > length:
            raise AssertionError(f"generated {len(row)} tokens for a target of {target}")
        ids[b, : len(row)] = row
        mask[b, : len(row)] = 1
        conversations.append(conversation)
    return ids, mask, conversations


def image(size: int, seed: int) -> Image.Image:
    """A random RGB image of ``size`` x ``size`` pixels."""
    pixels = np.random.default_rng(seed).integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def vision_conversation(
    maker: TextMaker, text_tokens: int, turns: int, picture: Any
) -> list[dict[str, Any]]:
    """A conversation of ``turns`` turns whose first user message opens with ``picture``."""
    conversation = maker.conversation(text_tokens, turns)
    first = conversation[0]["content"]
    conversation[0] = {
        "role": "user",
        "content": [{"type": "image", "image": picture}, {"type": "text", "text": first}],
    }
    return conversation
