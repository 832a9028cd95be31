"""Packed batches: the samples of a batch placed whole, back to back, in rows of at most
``max_length`` tokens, with positions restarting per document (3-D rotary positions for
the Qwen families) and the segment boundaries FlashAttention's varlen kernels take."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .. import engine
from ..collator import VLMCollator
from ..engine import IGNORE_INDEX, as_int64
from ..errors import CollateError, OptionError
from ..options import SEED_SHIFT, collate_options
from ..pipeline.fast_path import PackingOrder, output_tensor, packing_order
from ..pipeline.layout import converted
from ..processor.profile import ProcessorProfile, profile_of
from ..report import Batch, BatchReport
from .fake_image import add_fake_image, text_only_batches_option
from .positions import RopeConfig, ragged_rope_positions, rope_config

logger = logging.getLogger("vlm_collate")

STRATEGIES = ("best_fit", "first_fit")

_TOKEN_KEYS = ("input_ids", "attention_mask", "labels", "mm_token_type_ids", "token_type_ids")
_IMAGE_KEYS = {"pixel_values": "rows", "image_grid_thw": "items"}
_VIDEO_KEYS = {
    "pixel_values_videos": "rows",
    "video_grid_thw": "items",
    "second_per_grid_ts": "items",
    "video_second_per_grid": "items",
}
_AUDIO_KEYS = ("input_features", "feature_attention_mask")
_PER_SAMPLE_KEYS = ("n_images_per_sample", "n_videos_per_sample", "n_audios_per_sample")


@dataclass
class PackedReport(BatchReport):
    """A :class:`BatchReport` with the packed layout: ``documents`` lists, in packed
    order, ``(input index, row, first column, columns)`` of every sample; ``rows`` is the
    row count; ``length_mismatches`` pairs input indices with (estimated, real) lengths
    when the collator was given a length estimator."""

    rows: int = 0
    documents: list[tuple[int, int, int, int]] = field(default_factory=list)
    length_mismatches: list[tuple[int, int, int]] = field(default_factory=list)

    def summary(self) -> str:
        """One compact log line."""
        return f"{super().summary()}, {len(self.documents)} documents in {self.rows} rows"


@dataclass(frozen=True)
class _MediaIds:
    image: int | None
    video: int | None
    audio_start: int | None
    merge: int
    row_token: int | None = None  # families of UNIFORM_ROWS: the token each row expands to


UNIFORM_ROWS = frozenset({"gemma3", "internvl", "llama4"})
"""Families whose ``pixel_values`` has no grid but one row per image (Gemma 3) or per tile
(InternVL, Llama 4), each standing for the same number of image tokens: a document's rows
follow from its image tokens."""


class PackedCollator:
    """``collate_fn`` / ``data_collator`` that packs each batch's samples into rows.

    ``collate`` is a :class:`VLMCollator`, a collate function (then pass ``processor``)
    or a processor (its registered collate function). Each sample is collated as usual
    (``shift=False``, over-long samples by ``on_overflow``), then placed whole in a row
    of at most ``max_length`` tokens (``strategy``: ``"best_fit"`` or ``"first_fit"``
    decreasing). The batch holds ``input_ids`` and ``labels`` ``(rows, L)``,
    ``position_ids`` restarting at 0 per document (``(4, rows, L)`` for the Qwen
    families: the text positions, then temporal/height/width, what their ``forward``
    takes; ``(rows, L)`` otherwise), ``cu_seq_lens_q``/``cu_seq_lens_k`` and
    ``max_length_q``/``max_length_k`` (FlashAttention varlen; padding at the end of a
    row is its own segment), the media tensors in document order, ``use_cache=False``
    and no ``attention_mask``: transformers then masks each document separately from
    ``position_ids`` (sdpa, eager) or from ``cu_seq_lens`` (FlashAttention).

    ``shift``: as the collate functions (default ``True``, the seed's pre-shift, with
    ``shift_labels``); a document's first token is never a target of the previous one.
    ``rope``: ``"auto"`` (from the processor), a :class:`RopeConfig`, a model or its
    config (exact ``tokens_per_second``), or ``None`` for 1-D positions.
    ``pad_to_max_length``: every batch ``max_length`` columns; ``pad_to_multiple_of``
    rounds the column count up. ``length_estimator``: a callable ``example -> tokens``
    (e.g. :class:`~vlm_collate.sampler.LengthEstimator`) checked against the real
    lengths; differences go to ``batch.report.length_mismatches``.
    ``text_only_batches="fake_image"``: a batch without images or videos gets one tiny
    image with no labels, a document of its own, so the vision tower runs on every rank
    (FSDP/ZeRO-3); see :mod:`.fake_image`. Default ``None`` (``"keep"``): as it is.
    """

    def __init__(
        self,
        collate: Any,
        max_length: int,
        *,
        processor: Any = None,
        rope: Any = "auto",
        strategy: str = "best_fit",
        pad_to_max_length: bool = False,
        pad_to_multiple_of: int | None = None,
        shift: bool | None = None,
        length_estimator: Callable[[Any], int] | None = None,
        text_only_batches: str | None = None,
        **options: Any,
    ):
        self.text_only_batches = text_only_batches_option(text_only_batches)
        if isinstance(collate, VLMCollator):
            processor = collate.processor if processor is None else processor
            collate_fn = collate.collate_fn
            options = {**collate.options, **options}
        elif isinstance(collate, str) or callable(collate) and processor is not None:
            collate_fn = collate
        elif processor is None and hasattr(collate, "tokenizer"):
            processor, collate_fn = collate, None
        else:
            raise OptionError(
                f"collate must be a VLMCollator, a collate function or a processor, got {collate!r}"
            )
        if processor is None:
            raise OptionError(
                "PackedCollator needs the processor of the collate function (processor=...)"
            )
        if strategy not in STRATEGIES:
            raise OptionError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        # One validation path: the same names, types and ranges as every collate function,
        # checked now; the inner collator pads each sample as usual, unshifted.
        given_shift = options.pop("shift", None)
        shift = given_shift if shift is None else shift
        for name in ("max_length", "pad_to_max_length", "pad_to_multiple_of"):
            options.pop(name, None)
        self.layout = collate_options(
            max_length=max_length,
            pad_to_max_length=pad_to_max_length,
            pad_to_multiple_of=pad_to_multiple_of,
            shift=SEED_SHIFT if shift is None else shift,
            label_pad_token_id=options.pop("label_pad_token_id", IGNORE_INDEX),
            return_tensors=options.pop("return_tensors", "pt"),
        )
        inner = VLMCollator(processor, collate_fn, **options, max_length=max_length, shift=False)
        self.inner = inner
        self.processor = processor
        self.collate_fn = inner.collate_fn
        self.max_length = int(self.layout.max_length)  # type: ignore[arg-type]
        self.strategy = strategy
        self.shift = self.layout.shift
        self.pad_to_max_length = self.layout.pad_to_max_length
        self.pad_to_multiple_of = self.layout.pad_to_multiple_of
        self.length_estimator = length_estimator
        self.options = {k: v for k, v in inner.options.items() if k not in ("shift", "max_length")}
        self.rope = self._rope(rope)
        self.media = self._media_ids()
        self.pad_id = self.profile.require_pad_id()

    @property
    def profile(self) -> ProcessorProfile:
        """The processor's profile (resolved once per processor, not pickled)."""
        return profile_of(self.processor)

    def _rope(self, rope: Any) -> RopeConfig | None:
        if rope is None:
            return None
        if isinstance(rope, str):
            if rope != "auto":
                raise OptionError(
                    f"rope must be 'auto', None, a RopeConfig or a model config, got {rope!r}"
                )
            if self.profile.rope_family is None:
                return None
            return RopeConfig.from_processor(self.processor)
        return rope_config(rope)

    def _media_ids(self) -> _MediaIds:
        if self.rope is not None:
            r = self.rope
            return _MediaIds(
                r.image_token_id, r.video_token_id, r.audio_start_token_id, r.spatial_merge_size
            )
        profile = self.profile
        image, video = profile.media.get("image"), profile.media.get("video")
        uniform = profile.family is not None and profile.family.name in UNIFORM_ROWS
        return _MediaIds(
            image.placeholder_id if image is not None else None,
            video.placeholder_id if video is not None else None,
            profile.audio_start_id,
            profile.merge_kernel[0] if profile.merge_kernel else 1,
            image.expanded_id if uniform and image is not None else None,
        )

    def __call__(self, examples: list) -> Batch:
        # The fast path leaves its pixels unwritten; packed_batch writes them with the
        # documents in the packed order of the final lengths, so packing copies none.
        with packing_order() as deferred:
            inner = self.inner(examples)
            batch = packed_batch(self, examples, inner, deferred)
        return add_fake_image(batch, self) if self.text_only_batches else batch

    def __repr__(self) -> str:
        return (
            f"PackedCollator({type(self.processor).__name__}, {self.collate_fn.__name__}, "
            f"max_length={self.max_length}, strategy={self.strategy!r}, shift={self.shift}, "
            f"rope={None if self.rope is None else self.rope.family})"
        )


def _width(content: int, collator: PackedCollator) -> int:
    """Returned columns: ``max_length`` when fixed, else the longest row (less the
    shifted-out column), rounded up to ``pad_to_multiple_of``."""
    width = collator.max_length if collator.pad_to_max_length else max(content - collator.shift, 1)
    if collator.pad_to_multiple_of:
        width = -(-width // collator.pad_to_multiple_of) * collator.pad_to_multiple_of
    return width


def _gathered(values: np.ndarray, source: np.ndarray, fill: Any) -> np.ndarray:
    """``values[source]`` along the last axis, ``fill`` where ``source`` is -1."""
    # -1 indexes the last element: ``fill``, appended.
    return np.append(values, np.asarray(fill, dtype=values.dtype))[source]


def _per_doc(values: np.ndarray, offsets: np.ndarray, token: int | None) -> np.ndarray:
    """Per document, how many of its tokens equal ``token``."""
    hits = np.concatenate([[0], np.cumsum(values == token)]) if token is not None else None
    if hits is None:
        return np.zeros(len(offsets) - 1, dtype=np.int64)
    return (hits[offsets[1:]] - hits[offsets[:-1]]).astype(np.int64)


def _item_bounds(tokens_per_doc: np.ndarray, tokens_per_item: np.ndarray, kind: str) -> np.ndarray:
    """Per document, how many media items end at or before its end (from its media tokens
    and each item's token count); a document that ends inside an item is an error."""
    ends = np.concatenate([[0], np.cumsum(tokens_per_item)])
    doc_ends = np.cumsum(tokens_per_doc)
    bounds = np.searchsorted(ends, doc_ends)
    inside = bounds >= len(ends)
    if inside.any() or not np.array_equal(ends[bounds], doc_ends) or doc_ends[-1] != ends[-1]:
        raise CollateError(
            f"the batch's {kind} tokens ({int(doc_ends[-1])}) and its {kind} grids "
            f"({int(ends[-1])} tokens) disagree; the grids must cover the tokens sample by sample"
        )
    return bounds


_POOLED_BYTES = 1 << 20
"""Reordered tensors of at least this size are written into :func:`output_tensor`."""


def _reordered(
    value: Any, counts: np.ndarray, order: np.ndarray, written: np.ndarray | None = None
) -> Any:
    """The first axis of ``value``, grouped by document (``counts`` rows each, per
    document), in ``order``. ``written``: the document order ``value``'s groups are in
    (default: document order); when it is ``order`` already, ``value`` itself. A tensor
    is gathered into :func:`output_tensor` (shared memory in a DataLoader worker; a small
    one outside workers into memory of its own)."""
    if written is not None:
        if np.array_equal(written, order):
            return value
        position = np.empty(len(written), dtype=np.int64)
        position[written] = np.arange(len(written))
        counts, order = np.asarray(counts)[written], position[order]
    order = np.asarray(order, dtype=np.int64)
    if np.array_equal(order, np.arange(len(order))):
        return value  # documents already in packed order
    index = _group_rows(np.asarray(counts, dtype=np.int64), order)
    if isinstance(value, torch.Tensor):
        if value.dim() == 0 or value.is_sparse:
            return value[torch.from_numpy(index)]
        if value.nbytes < _POOLED_BYTES and torch.utils.data.get_worker_info() is None:
            # Grids and other small tensors: not from the output pool, whose few storages
            # are kept for the pixels (a grid taking a slot would evict one of them).
            return torch.index_select(value, 0, torch.from_numpy(index))
        out = output_tensor((len(index), *value.shape[1:]), value.dtype)
        return torch.index_select(value, 0, torch.from_numpy(index), out=out)
    if isinstance(value, np.ndarray):
        return value[index]
    return [value[i] for i in index]


def _group_rows(counts: np.ndarray, order: np.ndarray) -> np.ndarray:
    """The row indices of groups of ``counts`` rows each, taken in ``order``."""
    starts = np.concatenate([[0], np.cumsum(counts)])
    taken = counts[order]
    first = np.repeat(starts[order] - np.concatenate([[0], np.cumsum(taken)[:-1]]), taken)
    return (first + np.arange(int(taken.sum()))).astype(np.int64)


def _uniform_rows(values: np.ndarray, offsets: np.ndarray, token: int, rows: int) -> np.ndarray:
    """Per document, its ``pixel_values`` rows, when each of the batch's ``rows`` stands
    for the same number of ``token`` tokens (:data:`UNIFORM_ROWS`); else an error."""
    per_doc = _per_doc(values, offsets, token)
    total = int(per_doc.sum())
    each = total // rows if rows and total % rows == 0 else 0
    if each == 0 or np.any(per_doc % each):
        raise CollateError(
            f"the batch's {rows} pixel_values rows do not split its {total} image tokens "
            "evenly by document; report this with the batch (or use the padded VLMCollator)"
        )
    return per_doc // each


def _media_in_order(
    inner: dict[str, Any],
    values: np.ndarray,
    offsets: np.ndarray,
    order: np.ndarray,
    media: _MediaIds,
    written: np.ndarray | None = None,
) -> dict[str, Any]:
    """The media tensors of ``inner`` with documents in packed ``order``; ``written``: the
    document order ``pixel_values`` was written in (:func:`.fast_path.packing_order`)."""
    out: dict[str, Any] = {}
    pixels = inner.get("pixel_values")
    if inner.get("image_grid_thw") is None and pixels is not None and media.row_token is not None:
        rows = _uniform_rows(values, offsets, media.row_token, len(pixels))
        out["pixel_values"] = _reordered(pixels, rows, order, written)
    for grid_key, keys, token, kind in (
        ("image_grid_thw", _IMAGE_KEYS, media.image, "image"),
        ("video_grid_thw", _VIDEO_KEYS, media.video, "video"),
    ):
        if inner.get(grid_key) is None:
            continue
        grids = as_int64(inner[grid_key], grid_key).reshape(-1, 3)
        per_item = engine.tokens_per_grid(grids, (media.merge, media.merge))
        bounds = np.concatenate(
            [[0], _item_bounds(_per_doc(values, offsets, token), per_item, kind)]
        )
        patches = np.concatenate([[0], np.cumsum(grids.prod(axis=1))])
        items, rows = np.diff(bounds), np.diff(patches[bounds])
        for key, axis in keys.items():
            if inner.get(key) is not None:
                mine = written if key == "pixel_values" else None
                out[key] = _reordered(inner[key], rows if axis == "rows" else items, order, mine)
    if inner.get("input_features") is not None:
        if "n_audios_per_sample" not in inner and media.audio_start is None:
            raise CollateError("audio features without per-sample audio counts cannot be packed")
        audios = _per_doc(values, offsets, media.audio_start)
        for key in _AUDIO_KEYS:
            if inner.get(key) is not None:
                out[key] = _reordered(inner[key], audios, order)
    for key in _PER_SAMPLE_KEYS:
        if inner.get(key) is not None:
            out[key] = inner[key][torch.from_numpy(order.astype(np.int64))]
    return out


_KNOWN = {*_TOKEN_KEYS, *_IMAGE_KEYS, *_VIDEO_KEYS, *_AUDIO_KEYS, *_PER_SAMPLE_KEYS, "shift_labels"}
_KNOWN.add("loss_weights")


def packed_batch(
    collator: PackedCollator,
    examples: list,
    inner: Batch,
    written: np.ndarray | PackingOrder | None = None,
) -> Batch:
    """Packs an unshifted padded batch ``inner`` of ``examples`` as ``collator`` says.
    ``written``: the document order ``inner``'s ``pixel_values`` rows are in, when not
    the documents' own; or the :class:`.fast_path.PackingOrder` of the block ``inner``
    was made in, whose unwritten pixels are then written in the packed order."""
    unknown = sorted(k for k, v in inner.items() if k not in _KNOWN and v is not None)
    for grid_key, keys in (("image_grid_thw", _IMAGE_KEYS), ("video_grid_thw", _VIDEO_KEYS)):
        if inner.get(grid_key) is None:  # media rows without grids: no per-document split
            uniform = grid_key == "image_grid_thw" and collator.media.row_token is not None
            unknown += sorted(
                k
                for k in keys
                if inner.get(k) is not None and not (uniform and k == "pixel_values")
            )
    if unknown:
        raise CollateError(
            f"PackedCollator cannot lay out the keys {unknown} of {collator.collate_fn.__name__} "
            "in packed rows (known: token-axis, Qwen image/video/audio tensors); for this "
            "family's media batches use the padded VLMCollator"
        )
    ids = as_int64(inner["input_ids"], "input_ids")
    mask = as_int64(inner["attention_mask"], "attention_mask")
    values, offsets = engine.unpad(ids, mask)
    label_values, _ = engine.unpad(as_int64(inner["labels"], "labels"), mask)
    lengths = np.diff(offsets)
    order, bin_offsets = engine.pack_bins(lengths, collator.max_length, collator.strategy)
    contents = np.add.reduceat(lengths[order], bin_offsets[:-1]) if len(order) else np.zeros(1)
    width = _width(int(contents.max()), collator)
    source, label_source, text_positions, cu, spans = engine.packed_layout(
        offsets, order, bin_offsets, width, collator.shift
    )
    labels = _gathered(label_values, label_source, IGNORE_INDEX)
    targets = int(np.count_nonzero(labels != IGNORE_INDEX))
    batch: dict[str, Any] = {
        "input_ids": torch.from_numpy(_gathered(values, source, collator.pad_id)),
        "labels": torch.from_numpy(labels),
    }
    if inner.get("loss_weights") is not None:  # gathered with the labels they weigh
        weights = np.asarray(inner["loss_weights"], dtype=np.float32)[mask != 0]  # as unpad
        batch["loss_weights"] = torch.from_numpy(_gathered(weights, label_source, 0.0))
    for key in ("mm_token_type_ids", "token_type_ids"):
        if inner.get(key) is not None:
            typed, _ = engine.unpad(as_int64(inner[key], key), mask)
            batch[key] = torch.from_numpy(_gathered(typed, source, 0))
    if collator.rope is not None:
        seconds = next(
            (
                inner[k]
                for k in ("second_per_grid_ts", "video_second_per_grid")
                if inner.get(k) is not None
            ),
            None,
        )
        rope = ragged_rope_positions(
            values,
            offsets,
            collator.rope,
            inner.get("image_grid_thw"),
            inner.get("video_grid_thw"),
            seconds,
            bool(collator.options.get("use_audio_in_video", False)),
        )
        fill = text_positions.astype(rope.dtype)
        spatial = np.where(source >= 0, np.take(rope, np.maximum(source, 0), axis=1), fill)
        batch["position_ids"] = torch.from_numpy(np.concatenate([fill[None], spatial]))
    else:
        batch["position_ids"] = torch.from_numpy(text_positions)
    if isinstance(written, PackingOrder):  # the fast path's pixels, written in this order
        written = written.fill(inner.get("pixel_values"), order)
    if written is not None and len(written) != len(lengths):
        raise CollateError(
            f"the fast path wrote pixels for {len(written)} documents, the batch has "
            f"{len(lengths)}; report this as a bug"
        )
    batch.update(_media_in_order(inner, values, offsets, order, collator.media, written))
    cu32 = torch.from_numpy(cu.astype(np.int32))
    longest = int(np.diff(cu).max()) if len(cu) > 1 else 0
    batch.update(cu_seq_lens_q=cu32, cu_seq_lens_k=cu32, max_length_q=longest, max_length_k=longest)
    if collator.layout.label_pad_token_id != IGNORE_INDEX:
        ignored = batch["labels"] == IGNORE_INDEX
        batch["labels"] = batch["labels"].masked_fill(ignored, collator.layout.label_pad_token_id)
    if collator.shift:
        batch["shift_labels"] = batch["labels"]
    # A cache disables transformers' per-document masking (it masks packed documents
    # apart only without attention_mask and cache), and training needs none.
    batch["use_cache"] = False
    report = _report(inner.report, examples, spans, len(bin_offsets) - 1, lengths, collator)
    report.target_tokens = targets
    if logger.isEnabledFor(logging.DEBUG):
        logger.debug(report.summary())
    return Batch(converted(batch, collator.layout.return_tensors), report=report)


def _report(
    inner: BatchReport,
    examples: list,
    spans: np.ndarray,
    rows: int,
    lengths: np.ndarray,
    collator: PackedCollator,
) -> PackedReport:
    base = {f.name: getattr(inner, f.name) for f in dataclasses.fields(inner) if f.init}
    dropped = {i for i, _ in inner.dropped}
    kept = [i for i in range(len(examples)) if i not in dropped]
    documents = [(kept[int(d)], int(r), int(c), int(n)) for d, r, c, n in spans.tolist()]
    mismatches = []
    if collator.length_estimator is not None:
        for k, index in enumerate(kept):
            estimate = int(collator.length_estimator(examples[index]))
            if estimate != int(lengths[k]) and index not in inner.truncated:
                mismatches.append((index, estimate, int(lengths[k])))
        if mismatches:
            logger.warning(
                "packing: %d samples' estimated lengths differ from their real lengths "
                "(first: sample %d, %d estimated, %d real); rows may be under-filled",
                len(mismatches),
                *mismatches[0],
            )
    return PackedReport(**base, rows=rows, documents=documents, length_mismatches=mismatches)


__all__ = ["STRATEGIES", "PackedCollator", "PackedReport", "packed_batch"]
