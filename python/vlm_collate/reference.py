"""Plain-Python twins of every engine function, written for clarity, not speed.

Property tests check that the engine agrees with these on random inputs;
benchmarks measure the engine against them. Arguments are lists (or anything
with ``tolist``); results are lists.
"""

from __future__ import annotations

from collections.abc import Sequence

IGNORE_INDEX = -100


def _as_list(x) -> list:
    return x.tolist() if hasattr(x, "tolist") else list(x)


def find_subsequence(
    haystack: Sequence[int],
    pattern: Sequence[int],
    start: int = 0,
    allow_first_token_mismatch: bool = False,
) -> tuple[int, int]:
    """First window at or after ``start`` equal to ``pattern`` (or, with the flag, equal
    but for its first token), as ``(start, end)``; ``(-1, -1)`` if none."""
    h, p = _as_list(haystack), _as_list(pattern)
    m = len(p)
    for i in range(start, len(h) - m + 1):
        window = h[i : i + m]
        if window == p or (allow_first_token_mismatch and window[1:] == p[1:]):
            return i, i + m
    return -1, -1


def find_reply(haystack, reply, start: int = 0) -> tuple[int, int]:
    """A reply's tokens at or after ``start``: exactly, else with its first, its last,
    or both its first and last tokens differing (merged with their neighbours)."""
    h, r = _as_list(haystack), _as_list(reply)
    m = len(r)
    hit = find_subsequence(h, r, start)
    if hit[0] < 0 and m >= 2:
        hit = find_subsequence(h, r, start, allow_first_token_mismatch=True)
    for flag, need in ((False, 2), (True, 3)):
        if hit[0] < 0 and m >= need:
            s, e = find_subsequence(h, r[:-1], start, allow_first_token_mismatch=flag)
            if s >= 0 and e < len(h):
                hit = (s, e + 1)
    return hit


def _longest_match(row: list[int], patterns: Sequence[Sequence[int]], at: int) -> int:
    lengths = [len(p) for p in patterns if row[at : at + len(p)] == list(p)]
    return max(lengths, default=0)


def labels_from_markers(
    input_ids, attention_mask, starts, ends, ignore_ids=(), count_headers=False
):
    """Labels by markers: after an assistant-start marker (the longest that matches),
    every attended token up to and including the end-of-turn marker is a target.
    With ``count_headers`` also, per row, the attended positions where any start marker
    begins (whole inside the row), wherever they are."""
    labels, found, headers = [], [], []
    for row, mask in zip(_as_list(input_ids), _as_list(attention_mask)):
        out = [IGNORE_INDEX] * len(row)
        inside, replies, i = False, 0, 0
        while i < len(row):
            if mask[i] == 0:
                inside, i = False, i + 1
            elif not inside:
                n = _longest_match(row, starts, i)
                if n:
                    inside, replies, i = True, replies + 1, i + n
                else:
                    i += 1
            elif n := _longest_match(row, ends, i):
                for j in range(i, i + n):
                    if mask[j]:
                        out[j] = row[j]
                inside, i = False, i + n
            else:
                if row[i] not in ignore_ids:
                    out[i] = row[i]
                i += 1
        labels.append(out)
        found.append(replies)
        headers.append(
            sum(1 for p in range(len(row)) if mask[p] and _longest_match(row, starts, p))
        )
    return (labels, found, headers) if count_headers else (labels, found)


def _next_header_end(row: list[int], headers, start: int) -> int:
    hits = [find_subsequence(row, h, start) for h in headers]
    hits = [h for h in hits if h[0] >= 0]
    if not hits:
        return -1
    return min(hits, key=lambda se: (se[0], -se[1]))[1]


def labels_from_contents(
    input_ids,
    attention_mask,
    reply_values,
    reply_offsets,
    replies_per_row,
    stop_ids,
    headers=(),
    ignore_ids=(),
):
    """Labels by contents: each reply is found in order (after the next header when
    headers are given) and labelled with the stop token right after it."""
    values, offsets = _as_list(reply_values), _as_list(reply_offsets)
    replies = [values[offsets[k] : offsets[k + 1]] for k in range(len(offsets) - 1)]
    labels, located_per_row, k = [], [], 0
    for row, mask, count in zip(
        _as_list(input_ids), _as_list(attention_mask), _as_list(replies_per_row)
    ):
        out = [IGNORE_INDEX] * len(row)
        cursor, located = 0, 0

        def label(lo: int, hi: int, out=out, row=row, mask=mask) -> None:
            for j in range(lo, hi):
                if mask[j] and row[j] not in ignore_ids:
                    out[j] = row[j]

        for reply in replies[k : k + count]:
            start = cursor
            if headers:
                start = _next_header_end(row, headers, cursor)
                if start < 0:
                    break
            if not reply:
                hit = (start, start) if headers else (-1, -1)
            else:
                hit = find_reply(row, reply, start)
            if hit[0] >= 0:
                s, e = hit
                label(s, e)
                if e < len(row) and mask[e] and row[e] in stop_ids:
                    out[e] = row[e]
                    e += 1
                located += 1
                cursor = e
                continue
            if headers:
                stop = start
                while stop < len(row) and mask[stop]:
                    stop += 1
                tail = row[start:stop]
                if tail and len(tail) < len(reply) and tail[1:] == reply[1 : len(tail)]:
                    label(start, stop)
                    located += 1
            break
        k += count
        labels.append(out)
        located_per_row.append(located)
    return labels, located_per_row


def pad_rows(rows, pad_value, padding_side="right", max_length=None, pad_to_multiple_of=None):
    """Pads ragged rows to one length; returns ``(ids, attention_mask)``."""
    rows = [_as_list(r) for r in rows]
    length = max((len(r) for r in rows), default=0)
    if max_length is not None:
        for i, r in enumerate(rows):
            if len(r) > max_length:
                raise ValueError(
                    f"sample {i} has {len(r)} tokens, more than max_length={max_length}"
                )
        length = max_length
    if pad_to_multiple_of:
        length = -(-length // pad_to_multiple_of) * pad_to_multiple_of
    ids, mask = [], []
    for r in rows:
        pad = [pad_value] * (length - len(r))
        ones, zeros = [1] * len(r), [0] * (length - len(r))
        if padding_side == "left":
            ids.append(pad + r)
            mask.append(zeros + ones)
        else:
            ids.append(r + pad)
            mask.append(ones + zeros)
    return ids, mask


def unpad(input_ids, attention_mask) -> list[list[int]]:
    """The attended tokens of each row."""
    return [
        [t for t, m in zip(row, mask) if m]
        for row, mask in zip(_as_list(input_ids), _as_list(attention_mask))
    ]


def expand_placeholders(
    input_ids, attention_mask, placeholder_id, counts, counts_per_row, pad_id, padding_side="right"
):
    """Repeats the i-th placeholder ``counts[i]`` times, row by row, and pads again."""
    counts, per_row = _as_list(counts), _as_list(counts_per_row)
    rows, k = [], 0
    for r, row in enumerate(unpad(input_ids, attention_mask)):
        found = row.count(placeholder_id)
        if found != per_row[r]:
            raise ValueError(f"sample {r} has {found} placeholders but {per_row[r]} images")
        out = []
        for t in row:
            if t == placeholder_id:
                out.extend([placeholder_id] * counts[k])
                k += 1
            else:
                out.append(t)
        rows.append(out)
    if k != len(counts):
        raise ValueError(f"{len(counts)} counts for {k} placeholders")
    return pad_rows(rows, pad_id, padding_side)


def tokens_per_grid(grids, merge_kernel_size=(2, 2)) -> list[int]:
    """``t * (h // mh) * (w // mw)`` per ``(t, h, w)`` grid."""
    mh, mw = merge_kernel_size
    out = []
    for i, (t, h, w) in enumerate(_as_list(grids)):
        if h % mh or w % mw or min(t, h, w) <= 0:
            raise ValueError(f"image {i} has grid ({t}, {h}, {w}) not divisible by ({mh}, {mw})")
        out.append(t * (h // mh) * (w // mw))
    return out


def fitted_lengths(rows, max_length: int, media_ids) -> list[int]:
    """Each row's length cut to ``max_length``, or -1 when media lie past the cut."""
    out = []
    for r in rows:
        r = _as_list(r)
        if len(r) <= max_length:
            out.append(len(r))
        elif any(t in media_ids for t in r[max_length:]):
            out.append(-1)
        else:
            out.append(max_length)
    return out


def pack_bins(lengths, capacity: int, strategy: str = "best_fit") -> list[list[int]]:
    """Best- or first-fit decreasing by definition: documents longest first (ties by
    index), each into the open bin with the least room that fits (ties: the lowest bin)
    or the first one that fits, else a new bin; bins list documents in placement order."""
    lengths = _as_list(lengths)
    if capacity < 1:
        raise ValueError(f"capacity must be at least 1, got {capacity}")
    for i, n in enumerate(lengths):
        if n > capacity:
            raise ValueError(f"document {i} has {n} tokens, more than the row capacity")
    bins: list[list[int]] = []
    rooms: list[int] = []
    for doc in sorted(range(len(lengths)), key=lambda d: (-lengths[d], d)):
        n = lengths[doc]
        fits = [b for b in range(len(bins)) if rooms[b] >= n]
        if fits:
            b = min(fits, key=lambda b: (rooms[b], b)) if strategy == "best_fit" else fits[0]
            rooms[b] -= n
            bins[b].append(doc)
        else:
            rooms.append(capacity - n)
            bins.append([doc])
    return bins
