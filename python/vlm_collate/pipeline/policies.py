"""The sample policies of the pipeline: what a sample with no assistant turn, one longer
than ``max_length``, and a row left without a target get (``on_unlabeled``,
``on_overflow``); each returns the positions that stay and records the rest in the
batch report."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .. import engine
from ..engine import IGNORE_INDEX, as_int64
from ..errors import SampleError, SampleTooLongError
from ..formats.conversation import assistant_turns
from ..options import MAX_PIXELS, CollateOptions
from ..processor.media_tokens import (
    PixelBudget,
    budget_covering,
    image_tokens,
    own_budget,
    pixel_budget,
    resized_image,
)
from ..processor.profile import ProcessorProfile
from ..report import BatchReport
from .loss_policies import appended_stop

logger = logging.getLogger("vlm_collate")


def unlabeled_policy(
    conversations: list[list[dict[str, Any]]], options: CollateOptions, report: BatchReport
) -> list[int]:
    keep = []
    for i, conversation in enumerate(conversations):
        if assistant_turns(conversation):
            keep.append(i)
        elif options.on_unlabeled == "raise":
            raise SampleError(
                f"sample {i} has no assistant turn, so nothing to train on; "
                "fix the data or pass on_unlabeled='warn' or 'drop'"
            )
        elif options.on_unlabeled == "drop":
            report.dropped.append((i, "no assistant turn"))
        else:
            keep.append(i)
    return keep


def overflow_policy(
    encoded: dict[str, Any],
    keep: list[int],
    options: CollateOptions,
    media_ids: list[int],
    report: BatchReport,
    blocks: Sequence[list[int]] = ([], []),
) -> list[int]:
    """Positions (into ``keep``) of the samples that stay (cut later when truncating)."""
    limit = options.max_length
    ids, mask = as_int64(encoded["input_ids"]), as_int64(encoded["attention_mask"])
    lengths = (mask != 0).sum(axis=1)
    over = [k for k in range(len(keep)) if lengths[k] > limit]
    if not over:
        return list(range(len(keep)))
    if options.on_overflow == "error":
        k = over[0]
        raise SampleTooLongError(
            f"sample {keep[k]} has {int(lengths[k])} tokens, more than max_length={limit}; "
            "raise max_length or pass on_overflow='truncate' or 'drop'"
        )
    if options.on_overflow == "drop":
        for k in over:
            report.dropped.append((keep[k], f"{int(lengths[k])} tokens > max_length={limit}"))
        logger.warning(
            "samples %s are longer than max_length=%d; dropped (on_overflow='drop')",
            [keep[k] for k in over],
            limit,
        )
        return [k for k in range(len(keep)) if k not in set(over)]
    values, offsets = engine.unpad(ids, mask)
    fit = engine.fitted_lengths(values, offsets, limit, media_ids, *blocks)  # (opens, closes)
    stay = []
    for k in range(len(keep)):
        if fit[k] < 0:
            report.dropped.append(
                (keep[k], f"media reach past max_length={limit} ({int(lengths[k])} tokens)")
            )
            logger.warning(
                "sample %d: media reach past max_length=%d; dropped (media are never cut)",
                keep[k],
                limit,
            )
        else:
            stay.append(k)
            if lengths[k] > limit:
                report.truncated.append(keep[k])
    return stay


def empty_rows_policy(
    labels: np.ndarray,
    lengths: np.ndarray,
    keep: list[int],
    conversations: list[list[dict[str, Any]]],
    options: CollateOptions,
    report: BatchReport,
) -> list[int]:
    """Positions (into ``keep``) of the rows that stay: a row left without a target
    token (no assistant turn, or every reply token cut by truncation) follows
    ``on_unlabeled``. ``lengths`` are the rows' token counts after truncation."""
    columns = np.arange(labels.shape[1])[None, :]
    targets = ((labels != IGNORE_INDEX) & (columns < lengths[:, None])).sum(axis=1)
    stay = []
    for k, index in enumerate(keep):
        if targets[k] > 0 or not assistant_turns(conversations[index]):
            stay.append(k)  # rows without an assistant turn were decided before encoding
            continue
        cut = bool((labels[k, lengths[k] :] != IGNORE_INDEX).any())
        reason = (
            f"truncation at max_length={options.max_length} removed every reply token"
            if cut
            else "no reply token was found"
        )
        if options.on_unlabeled == "raise":
            raise SampleError(
                f"sample {index}: {reason}, so nothing to train on; "
                + (
                    "raise max_length or pass on_unlabeled='drop' or 'warn'"
                    if cut
                    else "check its assistant turns or pass on_unlabeled='drop' or 'warn'"
                )
            )
        if options.on_unlabeled == "drop":
            report.dropped.append((index, reason))
        else:
            stay.append(k)
    return stay


# --------------------------------------------------------------------------- media budgets

SHRUNK_KEY = "_vlm_collate_shrunk"
"""The encoded batch's entry that carries the shrunk samples to the batch report."""

BUDGET_KEYS = ("min_pixels", "max_pixels")
"""Row and image-item keys that set an image's pixel budget (qwen-vl-utils' names)."""


def image_items(conversation: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The image items of a conversation in order (the order of ``media_of``'s images)."""
    items = []
    for message in conversation:
        content = message.get("content")
        if isinstance(content, (list, tuple)):
            items.extend(i for i in content if isinstance(i, Mapping) and i.get("type") == "image")
    return items


def _budget_value(source: Any, name: str, where: str) -> int | None:
    value = source.get(name) if isinstance(source, Mapping) else None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise SampleError(f"{where}: {name} must be a positive integer, got {value!r}")
    if not 1 <= int(value) <= MAX_PIXELS:
        raise SampleError(f"{where}: {name} must be in [1, {MAX_PIXELS}], got {value!r}")
    return int(value)


def image_budgets(
    profile: ProcessorProfile,
    options: CollateOptions,
    example: Any,
    conversation: Sequence[Mapping[str, Any]],
    index: int,
) -> list[PixelBudget | None]:
    """Each image's ``(min_pixels, max_pixels)`` in sample ``index``: an image item's
    ``min_pixels``/``max_pixels`` over its row's, over the options'; a bound none of them
    names keeps the processor's own. None for an image no budget names."""
    row = {n: _budget_value(example, n, f"sample {index}") for n in BUDGET_KEYS}
    budgets: list[PixelBudget | None] = []
    for k, item in enumerate(image_items(conversation)):
        where = f"sample {index}, image {k}"
        own = {n: _budget_value(item, n, where) for n in BUDGET_KEYS}
        low, high = (
            next((v for v in (own[n], row[n], getattr(options, n)) if v is not None), None)
            for n in BUDGET_KEYS
        )
        if low is not None and high is not None and low > high:
            raise SampleError(
                f"{where}: min_pixels={low} is above max_pixels={high}; "
                "pass min_pixels <= max_pixels"
            )
        budgets.append(pixel_budget(profile, low, high))
    return budgets


def sample_tokens(
    profile: ProcessorProfile,
    fixed: int,
    sizes: Sequence[tuple[int, int]],
    budgets: Sequence[PixelBudget | None],
) -> int:
    """A sample's length: ``fixed`` (its text tokens, one placeholder per image, and an
    appended stop token) plus what each image of ``sizes`` adds under its budget."""
    return fixed + sum(image_tokens(profile, h, w, b) - 1 for (h, w), b in zip(sizes, budgets))


def shrunk_budgets(
    profile: ProcessorProfile,
    fixed: int,
    sizes: Sequence[tuple[int, int]],
    budgets: Sequence[PixelBudget | None],
    limit: int,
) -> tuple[list[PixelBudget | None], int] | None:
    """For a sample longer than ``limit`` (see :func:`sample_tokens`): its images'
    budgets with every ``max_pixels`` capped at the largest ``cap`` that makes the
    sample fit (never below an image's ``min_pixels``; the processor's resize rule puts
    the result on its grid, multiples of patch x merge on each side), and ``cap``; the
    lowest cap when even that does not fit (the overflow rule then applies). None when
    the sample fits as it is or has no image."""
    if not sizes or sample_tokens(profile, fixed, sizes, budgets) <= limit:
        return None
    resolved = [b if b is not None else own_budget(profile) for b in budgets]

    def capped(cap: int) -> list[PixelBudget | None]:
        return [(low, max(low, min(high, cap))) for low, high in resolved]

    low, high = min(b[0] for b in resolved), max(b[1] for b in resolved)
    if sample_tokens(profile, fixed, sizes, capped(low)) > limit:
        return capped(low), low
    while low < high:  # the largest cap that fits (tokens never grow as the cap falls)
        mid = (low + high + 1) // 2
        if sample_tokens(profile, fixed, sizes, capped(mid)) <= limit:
            low = mid
        else:
            high = mid - 1
    return capped(low), low


def budgeted_images(
    profile: ProcessorProfile,
    options: CollateOptions,
    examples: Sequence[Any],
    conversations: Sequence[Sequence[Mapping[str, Any]]],
    indices: Sequence[int],
    texts: Sequence[str],
    images: list[list[Any]],
) -> tuple[PixelBudget | None, list[tuple[int, int]]]:
    """The images' budgets applied for one processor call: per-row and per-item budgets
    (:func:`image_budgets`) and, with ``shrink_media`` and ``max_length``, the cap that
    makes an over-long sample fit (:func:`shrunk_budgets`, decided from image sizes and
    the rendered text's tokens, no pixels processed). Returns the call-wide budget and
    ``(index, cap)`` of each shrunk sample. Where images of the batch have different
    budgets, each one in ``images`` is replaced (in place) by itself resized by the
    processor's own resize rule under its budget, and the call-wide budget holds all
    their sizes, so the call leaves them as they are: the pixels and grids each image
    would get from a call with its own budget."""
    base = pixel_budget(profile, options.min_pixels, options.max_pixels)
    per_image = [
        image_budgets(profile, options, e, c, i) if n else []
        for e, c, i, n in zip(examples, conversations, indices, map(len, images))
    ]
    shrunk: list[tuple[int, int]] = []
    limit = options.max_length
    if getattr(options, "shrink_media", False) and limit is not None:
        for s, sample in enumerate(images):
            if not sample:
                continue
            sizes = [(im.height, im.width) for im in sample]
            fixed = len(profile.tokenizer(texts[s], add_special_tokens=False)["input_ids"])
            fixed += appended_stop(
                profile, conversations[s], options.close_last_reply, options.train_on
            )
            result = shrunk_budgets(profile, fixed, sizes, per_image[s], limit)
            if result is not None:
                per_image[s] = result[0]
                shrunk.append((int(indices[s]), int(result[1])))
    distinct = {b for sample in per_image for b in sample}
    if not distinct or distinct == {base}:
        return base, shrunk
    if len(distinct) == 1:
        return distinct.pop(), shrunk
    areas = []
    for sample, budgets in zip(images, per_image):
        for k, budget in enumerate(budgets):
            sample[k] = resized_image(profile, sample[k], budget or own_budget(profile))
            areas.append(sample[k].height * sample[k].width)
    return budget_covering(areas, None), shrunk
