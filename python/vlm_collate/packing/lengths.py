"""Lengths at scale on ``datasets``: :func:`add_lengths` adds a ``length`` column with
``Dataset.map(batched=True, num_proc=N)`` (cached by ``datasets``' fingerprint), reading
image sizes from file headers, never decoding pixels. :class:`PackedBatchSampler` takes
the column (``PackedBatchSampler(dataset["length"], ...)``)."""

from __future__ import annotations

import json
from typing import Any

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


class RowLengths:
    """The batched ``map`` function of :func:`add_lengths`: picklable and deterministic
    (its fingerprint is given explicitly, see :func:`add_lengths`)."""

    def __init__(self, processor: Any, column: str = "length"):
        self.estimate = LengthEstimator(processor)
        self.column = column

    def __call__(self, batch: dict[str, list], indices: list[int]) -> dict[str, list[int]]:
        names = list(batch)
        rows = ({k: batch[k][j] for k in names} for j in range(len(indices)))
        return {self.column: [self.estimate(_headers_only(r), i) for r, i in zip(rows, indices)]}


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
    batch_size: int = 1000,
    **map_kwargs: Any,
) -> Any:
    """``dataset`` (a ``datasets.Dataset``) with a ``column`` of estimated sample lengths
    (:class:`LengthEstimator`: rendered text tokens plus each image's tokens from its
    header). Runs ``Dataset.map(batched=True, num_proc=num_proc)``; image columns are
    read with ``decode=False`` so no pixel is decoded. The result is cached under a
    fingerprint made of the dataset's and the processor's (tokenizer, template, image
    settings), so a second call on the same data loads the cache."""
    import datasets
    from datasets.fingerprint import Hasher

    features = dataset.features
    plain = dataset.cast(_undecoded(features)) if _undecoded(features) != features else dataset
    fingerprint = Hasher.hash(
        ("vlm_collate.add_lengths", 1, dataset._fingerprint, _processor_key(processor), column)
    )
    out = plain.map(
        RowLengths(processor, column),
        batched=True,
        batch_size=batch_size,
        with_indices=True,
        num_proc=num_proc,
        new_fingerprint=fingerprint,
        desc="vlm_collate: lengths",
        **map_kwargs,
    )
    if plain is not dataset:
        out = out.cast(datasets.Features({**features, column: out.features[column]}))
    return out


__all__ = ["RowLengths", "add_lengths"]
