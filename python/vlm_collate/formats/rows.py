"""Row identity: the dataset row a sample came from, named in errors and the batch report.

A row names itself by one of :data:`ROW_KEYS` (``id`` as LLaVA and ShareGPT4V publish,
``idx``, webdataset's ``__key__``, or ``__index__`` that :func:`with_row_index` adds);
an error then reads ``row 'coco-0042' (sample 5 of the batch): ...``, else ``sample 5: ...``
as before."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

ROW_KEYS = ("id", "idx", "__key__", "__index__")
"""Row fields that name a dataset row, in order of preference."""

INDEX_KEY = "__index__"

_SAMPLE = re.compile(r"^sample (\d+)\b")


def row_id(example: Any) -> Any:
    """The identity a row carries (a string or an integer), or None."""
    if not isinstance(example, Mapping):
        return None
    for key in ROW_KEYS:
        value = example.get(key)
        if isinstance(value, (str, int)) and not isinstance(value, bool):
            return value
        if value is not None and hasattr(value, "item"):  # a numpy or torch scalar
            try:
                return value.item()
            except (TypeError, ValueError):
                continue
    return None


def where(index: int, example: Any = None, row: Any = None) -> str:
    """How a message names sample ``index`` of a batch: ``row 'x' (sample 5 of the batch)``
    when the row (``example``, or its identity ``row``) has one, else ``sample 5``."""
    if row is None:
        row = row_id(example)
    if row is None:
        return f"sample {index}"
    return f"row {row!r} (sample {index} of the batch)"


def renamed(message: str, rows: Sequence[Any]) -> str:
    """``message`` whose leading ``sample N`` names its row (when ``rows[N]`` is one)."""
    found = _SAMPLE.match(message)
    if found is None or int(found.group(1)) >= len(rows) or rows[int(found.group(1))] is None:
        return message
    index = int(found.group(1))
    return where(index, row=rows[index]) + message[found.end() :]


def naming_rows(error: BaseException, rows: Sequence[Any]) -> BaseException:
    """``error`` (a library error whose message starts ``sample N``) with the row named;
    the same object, its message rewritten, so its type and chain stay."""
    if error.args and isinstance(error.args[0], str):
        message = renamed(error.args[0], rows)
        if message is not error.args[0]:
            error.args = (message, *error.args[1:])
    return error


class _Indexed:
    """An iterable of rows, each given ``__index__`` (its position) on the way out."""

    def __init__(self, rows: Iterable[Any], start: int = 0):
        self.rows = rows
        self.start = start

    def __iter__(self) -> Iterator[Any]:
        for i, row in enumerate(self.rows, self.start):
            yield {**row, INDEX_KEY: i} if isinstance(row, Mapping) else row

    def __len__(self) -> int:
        return len(self.rows)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> Any:
        row = self.rows[i]  # type: ignore[index]
        index = i if i >= 0 else len(self) + i
        return {**row, INDEX_KEY: self.start + index} if isinstance(row, Mapping) else row


def with_row_index(dataset: Any, start: int = 0) -> Any:
    """``dataset`` whose rows carry ``__index__`` (their position, from ``start``), so errors
    and the batch report name the row. A ``datasets.Dataset`` gets a column (its ``map``
    with ``with_indices=True``, cached like any map); an ``IterableDataset`` is mapped
    lazily; a list or any other iterable of dicts is wrapped (indexable when the list is)."""
    if hasattr(dataset, "map") and hasattr(dataset, "column_names"):
        kind = type(dataset).__name__
        if kind == "IterableDataset":
            return dataset.map(lambda row, i: {INDEX_KEY: start + i}, with_indices=True)
        if INDEX_KEY in (dataset.column_names or ()):
            return dataset
        return dataset.map(lambda row, i: {INDEX_KEY: start + i}, with_indices=True)
    return _Indexed(dataset, start)
