"""Special-token text inside message content: escaped as plain text, refused, or kept.

A message whose text holds a special-token string (``"<|im_end|>"``) is tokenized by
the processor into the real token, so user text could open an assistant turn and a
reply could end early. The policy ``on_special_text`` decides what happens:

* ``"escape"`` (default): the string is tokenized as plain text, as
  ``split_special_tokens=True`` would tokenize it; template-written tokens are kept.
* ``"error"``: a :class:`~vlm_collate.errors.SampleError` names the sample, message
  and token.
* ``"keep"``: the token stays a special token; labels still follow the roles (the
  labels of an affected row are those of its escaped twin, mapped back).

Rare path only: a conversation is looked at further only when its content holds a
special-token string. It is rendered twice, as is and with each such string replaced
by a same-length run of a private-use character; the renderings differ exactly at the
content strings. In the text tokenization those are special tokens; the processor's
row is the same tokenization with media runs expanded, so after collapsing media runs
the two align token for token, and each stretch of text between template-written
special tokens that holds a content string is tokenized again with the string as text.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from .. import engine
from ..engine import as_int64
from ..errors import CollateError, SampleError
from ..processor.profile import ProcessorProfile
from ..processor.render import renderer_for

OnSpecialText = Literal["escape", "error", "keep"]
ON_SPECIAL_TEXT = ("escape", "error", "keep")

_MEDIA_RUN = -1  # stands for a run of media tokens in an aligned sequence
_FILLERS = tuple(chr(c) for c in range(0xE000, 0xE100))  # private-use characters


# --------------------------------------------------------------------------- detection


def _texts_of(message: Mapping[str, Any]) -> list[str]:
    content = message.get("content")
    if isinstance(content, str):
        return [content]
    if not isinstance(content, Sequence):
        return []
    return [
        item["text"]
        for item in content
        if isinstance(item, Mapping)
        and item.get("type") == "text"
        and isinstance(item.get("text"), str)
    ]


def special_text_in(
    conversation: Sequence[Mapping[str, Any]], profile: ProcessorProfile
) -> list[tuple[int, str]]:
    """``(message index, special-token string)`` for each special-token string in the
    content of ``conversation``, in order."""
    pattern = profile.special_pattern
    if pattern is None:
        return []
    return [
        (m, match.group(0))
        for m, message in enumerate(conversation)
        for text in _texts_of(message)
        for match in pattern.finditer(text)
    ]


def _substituted(
    conversation: Sequence[Mapping[str, Any]], pattern: re.Pattern[str], filler: str
) -> list[dict[str, Any]]:
    """The conversation with each content special-token string replaced by as many
    ``filler`` characters."""

    def blank(text: str) -> str:
        return pattern.sub(lambda m: filler * len(m.group(0)), text)

    out = []
    for message in conversation:
        content = message.get("content")
        if isinstance(content, str):
            content = blank(content)
        elif isinstance(content, Sequence):
            content = [
                {**item, "text": blank(item["text"])}
                if isinstance(item, Mapping)
                and item.get("type") == "text"
                and isinstance(item.get("text"), str)
                else item
                for item in content
            ]
        out.append({**message, "content": content})
    return out


def _content_ranges(
    profile: ProcessorProfile, conversation: Sequence[Mapping[str, Any]], where: str
) -> tuple[str, list[tuple[int, int]]]:
    """The rendering of ``conversation`` and the character ranges of its content
    special-token strings (where it differs from the rendering with them blanked)."""
    pattern = profile.special_pattern
    assert pattern is not None
    render = renderer_for(profile)
    text = render(list(conversation))
    filler = next((c for c in _FILLERS if c not in text), None)
    if filler is None:
        raise SampleError(f"{where}: the text uses every private-use character; cannot escape it")
    blanked = render(_substituted(conversation, pattern, filler))
    if len(blanked) != len(text):
        raise CollateError(
            f"{where}: the chat template transforms message text, so its special-token text "
            "cannot be located; pass on_special_text='error' or 'keep'"
        )
    ranges: list[tuple[int, int]] = []
    diff = np.frombuffer(text.encode("utf-32-le"), np.uint32) != np.frombuffer(
        blanked.encode("utf-32-le"), np.uint32
    )
    for start, end in _runs(diff):
        while start < end:  # adjacent strings form one run: split it by the pattern
            match = pattern.match(text, start, end)
            if match is None or blanked[start : match.end()] != filler * (match.end() - start):
                raise CollateError(
                    f"{where}: the chat template alters message text around a special-token "
                    "string; pass on_special_text='error' or 'keep'"
                )
            ranges.append((start, match.end()))
            start = match.end()
    return text, ranges


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """``[start, end)`` of each run of True in ``flags``."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], flags.astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


# --------------------------------------------------------------------------- tokenization


def _splitting_backend(profile: ProcessorProfile) -> Any:
    """A private copy of the tokenizer's backend that encodes special tokens as text
    (the shared tokenizer's state is never flipped, so other threads are unaffected),
    kept on the profile."""
    backend = getattr(profile.tokenizer, "backend_tokenizer", None)
    if backend is None:
        return None

    def copied() -> Any:
        from tokenizers import Tokenizer

        copy = Tokenizer.from_str(backend.to_str())
        copy.encode_special_tokens = True
        copy.no_truncation()
        copy.no_padding()
        return copy

    return profile.cached("splitting_backend", copied)


def _encoded(
    profile: ProcessorProfile, text: str, split: bool
) -> tuple[list[int], list[tuple[int, int]]]:
    """Ids and character offsets of ``text`` (no added specials), special-token strings
    read as text when ``split``."""
    if split and (backend := _splitting_backend(profile)) is not None:
        encoding = backend.encode(text, add_special_tokens=False)
        return list(encoding.ids), [tuple(o) for o in encoding.offsets]
    kwargs = {"split_special_tokens": True} if split else {}
    out = profile.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, **kwargs)
    return [int(i) for i in out["input_ids"]], [tuple(o) for o in out["offset_mapping"]]


def _chunk_tokens(
    profile: ProcessorProfile, chunk: str, expected: list[int], where: str
) -> tuple[list[int], list[tuple[int, int]]]:
    """The escaped ids of ``chunk`` (text between two template-written specials) and
    their offsets in it, after checking that its plain tokenization is ``expected``
    (the tokens it has in the row). SentencePiece-style tokenizers that add a prefix
    space at the start of a string are read after a newline, which is then removed."""
    for lead in ("", "\n"):
        plain, _ = _encoded(profile, lead + chunk, split=False)
        head = _encoded(profile, lead, split=False)[0] if lead else []
        if plain[: len(head)] != head or plain[len(head) :] != expected:
            continue
        ids, offsets = _encoded(profile, lead + chunk, split=True)
        if ids[: len(head)] != head:
            continue
        return ids[len(head) :], [(a - len(lead), b - len(lead)) for a, b in offsets[len(head) :]]
    raise CollateError(
        f"{where}: its text cannot be re-tokenized in place with this tokenizer "
        f"({type(profile.tokenizer).__name__}); pass on_special_text='error' or 'keep'"
    )


@dataclass(frozen=True)
class _Replacement:
    """Row tokens ``[start, end)`` become ``ids``; ``old_offsets``/``new_offsets`` are
    character spans of the old and new tokens (for mapping labels back)."""

    start: int
    end: int
    ids: list[int]
    old_offsets: list[tuple[int, int]]
    new_offsets: list[tuple[int, int]]


def _collapsed(ids: Sequence[int], media: frozenset[int]) -> tuple[list[int], list[int]]:
    """``ids`` with each run of media tokens as one ``_MEDIA_RUN``, and where each
    collapsed item starts in ``ids`` (plus a final end)."""
    values, starts = [], []
    for k, t in enumerate(ids):
        if t in media:
            if values and values[-1] == _MEDIA_RUN:
                continue
            values.append(_MEDIA_RUN)
        else:
            values.append(int(t))
        starts.append(k)
    starts.append(len(ids))
    return values, starts


def _replacements(
    row: Sequence[int],
    text: str,
    ranges: list[tuple[int, int]],
    profile: ProcessorProfile,
    media: frozenset[int],
    where: str,
) -> list[_Replacement]:
    """What to replace in the processor's ``row`` so the content special-token strings
    at ``ranges`` of ``text`` become plain-text tokens."""
    special = profile.special_ids
    ids, offsets = _encoded(profile, text, split=False)
    flagged = set()
    by_start = {a: k for k, (a, _b) in enumerate(offsets)}
    for a, b in ranges:
        k = by_start.get(a)
        if k is None or offsets[k][1] != b or ids[k] not in special:
            raise CollateError(
                f"{where}: the special-token text at characters {a}-{b} is not read as one "
                "special token; pass on_special_text='error' or 'keep'"
            )
        if ids[k] in media:
            raise SampleError(
                f"{where}: the text holds the media token {text[a:b]!r}; media go in their own "
                "content items ({'type': 'image'|'video'|'audio', ...}), not as text"
            )
        flagged.add(k)
    text_values, text_starts = _collapsed(ids, media)
    n = len(text_values)
    # Where the processor's row follows the text token for token (media runs collapsed),
    # chunks map by position; otherwise (a processor that adds text around a media block,
    # as Gemma's and Idefics' do) each chunk is found in order.
    row_values, row_starts = _collapsed(row, media)
    shift = next(
        (d for d in range(len(row_values) - n + 1) if row_values[d : d + n] == text_values), None
    )
    # Items of the collapsed text: boundaries are media runs and template-written specials.
    item_of_token = {text_starts[i]: i for i in range(n)}
    flagged_items = {item_of_token[k] for k in flagged}

    def boundary(i: int) -> bool:
        return text_values[i] == _MEDIA_RUN or (
            text_values[i] in special and i not in flagged_items
        )

    out: list[_Replacement] = []
    row_ids = [int(t) for t in row]
    cursor = 0  # chunks are found in the processor's row in order, after the previous one
    i = 0
    while i < n:
        if boundary(i):
            i += 1
            continue
        j = i
        while j < n and not boundary(j):
            j += 1
        if any(i <= f < j for f in flagged_items):
            left = offsets[text_starts[i] - 1][1] if i > 0 else 0  # end of the boundary
            right = offsets[text_starts[j]][0] if j < n else len(text)
            expected = [int(t) for t in ids[text_starts[i] : text_starts[j]]]
            new_ids, new_offsets = _chunk_tokens(profile, text[left:right], expected, where)
            for k in range(text_starts[i], text_starts[j]):
                if k in flagged and ids[k] in new_ids:
                    raise CollateError(
                        f"{where}: the tokenizer produces {text[offsets[k][0] : offsets[k][1]]!r} "
                        "from plain text too, so it cannot be escaped; pass "
                        "on_special_text='error' or 'keep'"
                    )
            if shift is not None:
                start = row_starts[shift + i]
            else:
                start = _found_at(row_ids, expected, cursor)
            if start is None:
                raise CollateError(
                    f"{where}: the processor's tokens around the special-token text differ from "
                    "the rendered chat template's, so it cannot be escaped; pass "
                    "on_special_text='error' or 'keep'"
                )
            cursor = start + len(expected)
            out.append(
                _Replacement(
                    start=start,
                    end=cursor,
                    ids=new_ids,
                    old_offsets=[
                        (a - left, b - left) for a, b in offsets[text_starts[i] : text_starts[j]]
                    ],
                    new_offsets=new_offsets,
                )
            )
        i = j
    return out


def _found_at(row: list[int], chunk: list[int], start: int) -> int | None:
    """Where ``chunk`` first occurs in ``row`` at or after ``start``, or None. A chunk is
    text between media runs and template-written special tokens, so the processor's
    expansion of media (which may add text around a block, as Gemma's and Idefics'
    do) leaves it whole."""
    n = len(chunk)
    first = chunk[0] if n else None
    for k in range(start, len(row) - n + 1):
        if row[k] == first and row[k : k + n] == chunk:
            return k
    return None


def _applied(row: np.ndarray, replacements: list[_Replacement], new: Callable) -> np.ndarray:
    """``row`` with each replacement's tokens swapped for ``new(replacement, old_values)``."""
    pieces, at = [], 0
    for r in replacements:
        pieces.append(row[at : r.start])
        pieces.append(np.asarray(new(r, row[r.start : r.end]), dtype=row.dtype))
        at = r.end
    pieces.append(row[at:])
    return np.concatenate(pieces)


# --------------------------------------------------------------------------- the policy


def _checked_policy(policy: str) -> str:
    if policy not in ON_SPECIAL_TEXT:
        raise CollateError(f"on_special_text must be one of {ON_SPECIAL_TEXT}, got {policy!r}")
    return policy


def _affected_rows(
    conversations: Sequence[Sequence[Mapping[str, Any]]],
    indices: Sequence[int],
    profile: ProcessorProfile,
    policy: str,
) -> list[int]:
    """Rows whose content holds special-token text; under ``"error"`` the first is raised."""
    if not profile.has_chat_template:
        return []  # no template renders the text (an encoder-decoder's own decoder text)
    rows = []
    for row, (conversation, index) in enumerate(zip(conversations, indices)):
        found = special_text_in(conversation, profile)
        if not found:
            continue
        if policy == "error":
            m, token = found[0]
            role = conversation[m].get("role")
            raise SampleError(
                f"sample {index}, message {m} ({role}): its text holds the special token "
                f"{token!r}, which would be read as chat structure; remove it, or pass "
                "on_special_text='escape' to train on it as plain text ('keep' keeps the token)"
            )
        rows.append(row)
    return rows


def _row_replacements(
    profile: ProcessorProfile,
    conversation: Sequence[Mapping[str, Any]],
    row: np.ndarray,
    index: int,
) -> list[_Replacement]:
    where = f"sample {index}"
    text, ranges = _content_ranges(profile, conversation, where)
    media = frozenset((*profile.media_ids, *profile.block_opens, *profile.block_closes))
    return _replacements(row.tolist(), text, ranges, profile, media, where)


def _token_axis(encoded: Mapping[str, Any], shape: tuple[int, ...]) -> list[str]:
    return [
        k
        for k, v in encoded.items()
        if k not in ("input_ids", "attention_mask")
        and hasattr(v, "shape")
        and tuple(v.shape) == shape
    ]


def _rebuilt(
    encoded: dict[str, Any],
    fixes: dict[int, list[_Replacement]],
    pad_id: int,
) -> dict[str, Any]:
    """``encoded`` with the rows in ``fixes`` escaped and the batch padded again."""
    ids, mask = as_int64(encoded["input_ids"]), as_int64(encoded["attention_mask"])
    left = bool(ids.shape[1] and (mask[:, 0] == 0).any() and (mask[:, -1] != 0).all())
    side = "left" if left else "right"
    others = _token_axis(encoded, ids.shape)
    rows, extra_rows = [], {k: [] for k in others}
    for r in range(ids.shape[0]):
        kept = np.flatnonzero(mask[r] != 0)
        row = ids[r, kept]
        extras = {k: np.asarray(encoded[k])[r, kept] for k in others}
        if r in fixes:
            row = _applied(row, fixes[r], lambda rep, _old: rep.ids)
            extras = {
                k: _applied(v, fixes[r], lambda rep, old: np.full(len(rep.ids), old[0]))
                for k, v in extras.items()
            }
        rows.append(row)
        for k in others:
            extra_rows[k].append(extras[k])
    new_ids, new_mask = engine.pad_rows(*engine.ragged(rows), int(pad_id), side)
    out = dict(encoded)
    out["input_ids"], out["attention_mask"] = (
        _like(encoded["input_ids"], new_ids),
        _like(encoded["attention_mask"], new_mask),
    )
    width = new_ids.shape[1]
    for k in others:
        value = np.asarray(encoded[k])
        padded = np.zeros((len(rows), width), dtype=value.dtype)
        for r, v in enumerate(extra_rows[k]):
            if side == "right":
                padded[r, : len(v)] = v
            else:
                padded[r, width - len(v) :] = v
        out[k] = _like(encoded[k], padded)
    return out


def _like(original: Any, array: np.ndarray) -> Any:
    """``array`` as the same kind of object as ``original`` (tensor or array)."""
    if hasattr(original, "detach"):
        import torch

        return torch.from_numpy(np.ascontiguousarray(array)).to(original.dtype)
    return array


def refuse_media_text(
    conversations: Sequence[Sequence[Mapping[str, Any]]],
    indices: Sequence[int],
    profile: ProcessorProfile,
) -> None:
    """Raises a SampleError naming the sample, message and string when message text holds
    a media placeholder or block-delimiter string (``<image>``, ``<|vision_start|>``):
    the processor would read it as a media slot, so no policy can keep it as text."""
    pattern = profile.media_pattern
    if pattern is None:
        return
    for conversation, index in zip(conversations, indices):
        for m, message in enumerate(conversation):
            for text in _texts_of(message):
                found = pattern.search(text)
                if found:
                    raise SampleError(
                        f"sample {index}, message {m} ({message.get('role')}): its text holds "
                        f"the media string {found.group(0)!r}, which the processor would read "
                        "as a media slot; media go in their own content items "
                        "({'type': 'image'|'video'|'audio', ...}): remove or reword the string "
                        "in the data (no on_special_text policy keeps it as text)"
                    )


def escaped_special_text(
    encoded: Mapping[str, Any],
    conversations: Sequence[Sequence[Mapping[str, Any]]],
    indices: Sequence[int],
    profile: ProcessorProfile,
    policy: str = "escape",
) -> dict[str, Any]:
    """The encoded batch with special-token text of message content handled by
    ``policy``: ``"escape"`` re-tokenizes it as plain text (rows re-padded),
    ``"error"`` raises a SampleError naming the sample, message and token, ``"keep"``
    leaves it. Rows without such text are untouched."""
    encoded = dict(encoded)
    policy = _checked_policy(policy)
    rows = _affected_rows(conversations, indices, profile, policy)
    if not rows or policy != "escape":
        return encoded

    ids, mask = as_int64(encoded["input_ids"]), as_int64(encoded["attention_mask"])
    fixes = {}
    for r in rows:
        row = ids[r, mask[r] != 0]
        fixes[r] = _row_replacements(profile, conversations[r], row, indices[r])
    return _rebuilt(encoded, fixes, profile.require_pad_id())


def labels_with_special_text(
    labeler: Callable[[dict[str, Any], list[list[dict[str, Any]]]], np.ndarray],
    encoded: Mapping[str, Any],
    conversations: Sequence[Sequence[Mapping[str, Any]]],
    profile: ProcessorProfile,
    policy: str = "escape",
) -> np.ndarray:
    """``labeler``'s labels, with the rows that keep content special tokens
    (``policy="keep"``) labelled as their escaped twins are and mapped back: a kept
    token is a target iff a plain-text token of its string is, so user text never
    becomes a target and a reply holding an end-of-turn string is labelled whole."""
    labels = np.array(labeler(dict(encoded), [list(c) for c in conversations]), dtype=np.int64)
    if _checked_policy(policy) != "keep":
        return labels
    rows = _affected_rows(conversations, range(len(conversations)), profile, "keep")
    if not rows:
        return labels

    ids, mask = as_int64(encoded["input_ids"]), as_int64(encoded["attention_mask"])
    fixes = {r: _row_replacements(profile, conversations[r], ids[r, mask[r] != 0], r) for r in rows}
    sub = {
        "input_ids": ids[rows],
        "attention_mask": mask[rows],
    }
    twin = _rebuilt(sub, {k: fixes[r] for k, r in enumerate(rows)}, profile.require_pad_id())
    twin_labels = as_int64(labeler(twin, [list(conversations[r]) for r in rows]))
    twin_mask = as_int64(twin["attention_mask"])
    for k, r in enumerate(rows):
        positions = np.flatnonzero(mask[r] != 0)
        twin_row = as_int64(twin_labels)[k, twin_mask[k] != 0]
        kept = _kept_labels(ids[r, positions], twin_row, fixes[r])
        labels[r, positions] = kept
    return labels


def _kept_labels(row: np.ndarray, twin: np.ndarray, fixes: list[_Replacement]) -> np.ndarray:
    """Labels of ``row`` (which keeps its special tokens) from the labels of its escaped
    ``twin``: tokens outside replaced stretches map one to one; inside, a token is a
    target iff an escaped token overlapping its characters is."""
    out = np.empty(len(row), dtype=np.int64)
    at = twin_at = 0
    for rep in fixes:
        n = rep.start - at
        out[at : rep.start] = twin[twin_at : twin_at + n]
        twin_at += n
        new = twin[twin_at : twin_at + len(rep.ids)]
        for k, (a, b) in enumerate(rep.old_offsets):
            hit = any(
                new[q] != engine.IGNORE_INDEX and s < b and e > a
                for q, (s, e) in enumerate(rep.new_offsets)
            )
            out[rep.start + k] = row[rep.start + k] if hit else engine.IGNORE_INDEX
        twin_at += len(rep.ids)
        at = rep.end
    out[at:] = twin[twin_at : twin_at + len(row) - at]
    return out
