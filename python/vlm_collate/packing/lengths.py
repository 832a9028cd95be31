"""Lengths at scale on ``datasets``: :func:`add_lengths` adds a ``length`` and a
``vision_length`` column with ``Dataset.map(batched=True, num_proc=N)`` (cached by
``datasets``' fingerprint), reading image sizes from file headers, never decoding
pixels. :class:`PackedBatchSampler` takes the dataset (``PackedBatchSampler(dataset,
...)``, ``balance="vision"`` reading ``vision_length``) or the column."""

from __future__ import annotations

import gc
import json
from collections.abc import Sequence
from typing import Any

from ..errors import OptionError
from .sampler import LengthEstimator


def _headers_only(value: Any) -> Any:
    """``value`` with every ``datasets`` image dict (``{"bytes", "path"}``) replaced by its
    bytes or its path, which :class:`LengthEstimator` reads by header only."""
    if isinstance(value, dict):
        if set(value) == {"bytes", "path"}:
            return value["bytes"] if value["bytes"] is not None else value["path"]
        return {k: _headers_only(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_headers_only(v) for v in value]
    return value


_SHARED: dict[str, LengthEstimator] = {}
"""Estimators of running :func:`add_lengths` calls, by fingerprint: workers forked by
``datasets`` inherit them, so the processor is neither pickled nor rebuilt per worker."""


def _shared_or(key: str, estimate: LengthEstimator | None) -> LengthEstimator:
    """The estimator registered under ``key`` (inherited by a forked worker), else the one
    that came pickled."""
    found = _SHARED.get(key, estimate)
    if found is None:
        raise OptionError(
            "RowLengths was sent to a process that did not inherit its estimator (it is "
            "shared by key only with processes forked during add_lengths); call "
            "add_lengths(...) instead of mapping RowLengths yourself"
        )
    return found


class RowLengths:
    """The batched ``map`` function of :func:`add_lengths`: picklable and deterministic
    (its fingerprint is given explicitly, see :func:`add_lengths`). With ``key`` set
    (during :func:`add_lengths` when ``datasets`` forks its workers) it pickles as that
    key alone and a worker takes the estimator it inherited; otherwise the estimator
    (with its processor) is pickled. ``vision_column`` (None: not added) receives each
    row's vision tokens; ``images`` names the columns whose values hold ``datasets``
    image dicts (None: every column is scanned for them)."""

    def __init__(
        self,
        processor: Any,
        column: str = "length",
        *,
        vision_column: str | None = "vision_length",
        images: Sequence[str] | None = None,
        estimate: LengthEstimator | None = None,
        key: str | None = None,
    ):
        self.estimate = estimate if estimate is not None else LengthEstimator(processor)
        self.column = column
        self.vision_column = vision_column
        self.images = None if images is None else tuple(images)
        self.key = key

    def __reduce__(self) -> tuple:
        payload = None if self.key is not None and self.key in _SHARED else self.estimate
        return (
            _rebuilt,
            (self.column, self.key, payload, self.vision_column, self.images),
        )

    def __call__(self, batch: dict[str, list], indices: list[int]) -> dict[str, list[int]]:
        # Batched work: every row rendered, then all texts tokenized in one call of the
        # fast tokenizer, then each row's media tokens from its images' headers. Only the
        # image columns are rewritten (image dicts to bytes or paths); a row is a plain
        # dict of the batch's values.
        columns = dict(batch)
        for name in columns if self.images is None else self.images:
            if name in columns:
                columns[name] = _headers_only(columns[name])
        names = list(columns)
        values = [columns[k] for k in names]
        rows = [dict(zip(names, row)) for row in zip(*values)] if values else []
        rows = rows or [{} for _ in indices]  # a batch without columns
        lengths, vision = self.estimate.measure_batch(rows, indices)
        out = {self.column: lengths}
        if self.vision_column is not None:
            out[self.vision_column] = vision
        return out


def _rebuilt(
    column: str,
    key: str | None,
    payload: LengthEstimator | None,
    vision_column: str | None = "vision_length",
    images: Sequence[str] | None = None,
) -> RowLengths:
    estimate = _shared_or(key, payload) if key is not None else payload
    return RowLengths(
        None, column, vision_column=vision_column, images=images, estimate=estimate, key=key
    )


def _has_images(feature: Any) -> bool:
    """Whether a ``datasets`` feature holds images: an ``Image`` feature, or a struct of
    exactly ``bytes`` and ``path`` (an image column read without its feature)."""
    import datasets

    if isinstance(feature, datasets.Image):
        return True
    if isinstance(feature, dict):
        if set(feature) == {"bytes", "path"}:
            return True
        return any(_has_images(v) for v in feature.values())
    if isinstance(feature, (list, tuple)):
        return any(_has_images(v) for v in feature)
    inner = getattr(feature, "feature", None)
    return inner is not None and _has_images(inner)


def _forks() -> bool:
    """Whether ``datasets``' worker pool (``multiprocess``) starts workers by fork (the
    method set, else the platform's default, listed first), without fixing the method."""
    try:
        import multiprocess

        method = multiprocess.get_start_method(allow_none=True)
        return (method or multiprocess.get_all_start_methods()[0]) == "fork"
    except (ImportError, RuntimeError, IndexError):
        return False


def _undecoded(features: Any) -> Any:
    """``features`` with every ``Image`` feature set to ``decode=False``."""
    import datasets

    if isinstance(features, datasets.Image):
        return datasets.Image(decode=False)
    if isinstance(features, dict):
        return type(features)({k: _undecoded(v) for k, v in features.items()})
    if isinstance(features, list):
        return [_undecoded(v) for v in features]
    feature = getattr(features, "feature", None)
    if feature is not None:
        copy = features.__class__.__new__(features.__class__)
        copy.__dict__.update(features.__dict__)
        copy.feature = _undecoded(feature)
        return copy
    return features


def _processor_key(processor: Any) -> str:
    tokenizer = getattr(processor, "tokenizer", processor)
    image = getattr(processor, "image_processor", None)
    parts = [
        type(processor).__qualname__,
        getattr(tokenizer, "name_or_path", ""),
        str(len(tokenizer)),
        getattr(processor, "chat_template", None) or getattr(tokenizer, "chat_template", ""),
        json.dumps(image.to_dict(), sort_keys=True, default=str) if image is not None else "",
    ]
    return "\n".join(str(p) for p in parts)


def add_lengths(
    dataset: Any,
    processor: Any,
    *,
    num_proc: int | None = None,
    column: str = "length",
    vision_column: str | None = "vision_length",
    batch_size: int = 1000,
    **map_kwargs: Any,
) -> Any:
    """``dataset`` (a ``datasets.Dataset``) with a ``column`` of estimated sample lengths
    (:class:`LengthEstimator`: rendered text tokens plus each image's tokens from its
    header) and a ``vision_column`` of each row's vision tokens (the tokens its images
    and videos become: the vision tower's cost, for ``PackedBatchSampler(...,
    balance="vision")``; ``None`` leaves it out). Runs ``Dataset.map(batched=True,
    num_proc=num_proc)``; image columns are read with ``decode=False`` so no pixel is
    decoded. The result is cached under a fingerprint made of the dataset's and the
    processor's (tokenizer, template, image settings), so a second call on the same data
    loads the cache. With ``num_proc > 1`` the workers are forked: they inherit the
    estimator (the processor is not pickled), and the garbage collector's objects are
    frozen during the map so that a worker's collections do not copy the parent's
    memory page by page."""
    import datasets
    from datasets.fingerprint import Hasher

    features = dataset.features
    plain = dataset.cast(_undecoded(features)) if _undecoded(features) != features else dataset
    fingerprint = Hasher.hash(
        (
            "vlm_collate.add_lengths",
            2,
            dataset._fingerprint,
            _processor_key(processor),
            column,
            vision_column,
        )
    )
    estimate = LengthEstimator(processor)
    images = [name for name, feature in features.items() if _has_images(feature)]
    function = RowLengths(
        processor, column, vision_column=vision_column, images=images, estimate=estimate
    )
    shared = bool(num_proc and num_proc > 1 and len(plain) and _forks())
    freeze = shared and gc.get_freeze_count() == 0
    if shared:
        # Workers are forked: they inherit the estimator (its profile warmed here on the
        # first row) instead of unpickling the processor, which costs seconds each.
        function({k: [v] for k, v in plain[0].items()}, [0])
        _SHARED[fingerprint] = estimate
        function.key = fingerprint
    if freeze:
        # A collection in a forked worker would otherwise visit (and so copy, page by
        # page) every object it inherited: about 0.4 s per worker measured here. (No
        # gc.collect() first: on a process holding torch and transformers it costs as
        # much; garbage frozen here is collected after gc.unfreeze().)
        gc.freeze()
    try:
        out = plain.map(
            function,
            batched=True,
            batch_size=batch_size,
            with_indices=True,
            num_proc=num_proc,
            new_fingerprint=fingerprint,
            desc="vlm_collate: lengths",
            **map_kwargs,
        )
    finally:
        if freeze:
            gc.unfreeze()
        if shared:
            _SHARED.pop(fingerprint, None)
    if plain is not dataset:
        added = {column: out.features[column]}
        if vision_column is not None:
            added[vision_column] = out.features[vision_column]
        out = out.cast(datasets.Features({**features, **added}))
    return out


__all__ = ["RowLengths", "add_lengths"]
