"""Examples read from disk: JSON Lines files and saved Hugging Face datasets.

Each example comes back as a :class:`Record`: the example itself (what a
collate function takes) and where it came from (``file.jsonl:7`` or
``folder[row 6]``), so errors can name the line a person has to fix.

In a JSON Lines file every non-blank line is one example,
``{"conversation": [{"role": ..., "content": ...}, ...]}``; an image (or video)
is a path relative to the file, a ``file://`` URL, a ``data:`` URL or bare
base64. Relative paths are resolved against the file's folder when read.
"""

from __future__ import annotations

import importlib.resources
import itertools
import json
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from ..formats.conversation import MEDIA_TYPES, conversation_of

SAMPLE_DATA = "sample.jsonl"
_MEDIA_KEYS = ("path", "url", "data")
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")


class DataError(ValueError):
    """An example that cannot be read or collated, with where it is."""


@dataclass(frozen=True)
class Record:
    """One example and its location (``where``, e.g. ``data.jsonl:7``)."""

    example: dict[str, Any]
    where: str


def sample_data_path() -> Path:
    """The sample dataset shipped in the package (a JSON Lines file)."""
    resource = importlib.resources.files("vlm_collate") / "data" / SAMPLE_DATA
    return Path(str(resource))


def _looks_like_path(value: str) -> bool:
    return len(value) < 256 or value.lower().endswith(_IMAGE_SUFFIXES)


def _resolved(value: Any, folder: Path) -> Any:
    """``value`` with a relative file path made absolute against ``folder``."""
    if isinstance(value, Mapping) and isinstance(value.get("url"), str):
        return {**value, "url": _resolved(value["url"], folder)}
    if not isinstance(value, str) or not value or value.startswith("data:"):
        return value
    if urlparse(value).scheme not in ("", "file") and not os.path.isabs(value):
        return value  # a URL: the library says what it does with it
    if value.startswith("file:") or os.path.isabs(value):
        return value
    return str(folder / value) if _looks_like_path(value) else value  # else bare base64


def _arrow_image(value: Any, folder: Path) -> Any:
    """An undecoded ``datasets`` Image value (``{"bytes", "path"}``) as bytes or a path."""
    if isinstance(value, Mapping) and ("bytes" in value or "path" in value):
        if value.get("bytes") is not None:
            return value["bytes"]
        if value.get("path") is not None:
            return _resolved(value["path"], folder)
    return _resolved(value, folder)


def _with_resolved_media(
    example: dict[str, Any], folder: Path, resolve: Callable[[Any, Path], Any] | None = None
) -> dict[str, Any]:
    resolve = resolve or _resolved
    conversation = example.get("conversation")
    if not isinstance(conversation, list):
        return example
    messages = []
    for message in conversation:
        content = message.get("content") if isinstance(message, Mapping) else None
        if not isinstance(content, list):
            messages.append(message)
            continue
        items = []
        for item in content:
            if isinstance(item, Mapping) and item.get("type") in MEDIA_TYPES:
                kind = item["type"]
                keys = (kind, f"{kind}_url", *_MEDIA_KEYS)
                item = {k: resolve(v, folder) if k in keys else v for k, v in item.items()}
            items.append(item)
        messages.append({**message, "content": items})
    return {**example, "conversation": messages}


def _jsonl_records(path: Path, label: str) -> Iterator[Record]:
    folder = path.resolve().parent
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{label}:{number}"
            try:
                example = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(
                    f"{where}: not valid JSON ({err.msg} at column {err.colno})"
                ) from err
            if not isinstance(example, dict):
                raise DataError(
                    f"{where}: each line must be a JSON object "
                    f'{{"conversation": [...]}}, got {type(example).__name__}'
                )
            yield Record(_with_resolved_media(example, folder), where)


def _is_saved_dataset(path: Path) -> bool:
    return path.is_dir() and any(
        (path / name).is_file() for name in ("dataset_info.json", "state.json", "dataset_dict.json")
    )


def _dataset_records(path: Path, label: str) -> Iterator[Record]:
    try:
        import datasets
    except ImportError as err:
        raise ImportError(
            f"{path} is a saved Hugging Face dataset; reading it needs the 'datasets' "
            "package: pip install datasets"
        ) from err
    loaded = datasets.load_from_disk(str(path))
    split = ""
    if isinstance(loaded, Mapping):  # a DatasetDict: the train split, else the first
        if not loaded:
            raise DataError(f"{path}: the saved dataset has no splits")
        split = "train" if "train" in loaded else next(iter(loaded))
        loaded = loaded[split]
    label = f"{label}[{split}]" if split else label
    for row, example in enumerate(loaded):
        where = f"{label} row {row}"
        if not isinstance(example, Mapping):
            raise DataError(f"{where}: a row must be a mapping, got {type(example).__name__}")
        yield Record(_with_resolved_media(dict(example), path, _arrow_image), where)


def iter_records(data: str | os.PathLike[str], label: str | None = None) -> Iterator[Record]:
    """Records of ``data``: a JSON Lines file or a folder saved by ``datasets``.
    Locations read ``{label}:{line}`` (``label`` defaults to ``data`` as given)."""
    path = Path(data)
    label = str(data) if label is None else label
    if _is_saved_dataset(path):
        return _dataset_records(path, label)
    if path.is_dir():
        raise DataError(
            f"{path} is a folder but not a saved Hugging Face dataset "
            "(no dataset_info.json, state.json or dataset_dict.json); pass a .jsonl file "
            "or a folder written by Dataset.save_to_disk"
        )
    if not path.exists():
        raise DataError(f"{path}: no such file")
    return _jsonl_records(path, label)


def read_records(
    data: str | os.PathLike[str], limit: int | None = None, label: str | None = None
) -> list[Record]:
    """The first ``limit`` records of ``data`` (all when None), each checked to be
    a well-formed conversation; an error names the record's line."""
    records = list(itertools.islice(iter_records(data, label), limit))
    if not records:
        raise DataError(f"{data}: no examples")
    for index, record in enumerate(records):
        try:
            conversation_of(record.example, index)
        except ValueError as err:
            raise DataError(f"{record.where}: {err}") from err
    return records


_SAMPLE_INDEX = re.compile(r"^(?:row .*? \()?sample (\d+)(?: of the batch\))?")


def located(err: Exception, records: Sequence[Record]) -> DataError | None:
    """``err`` prefixed with the location of the sample its message starts with
    (``sample 3: ...``, the library's convention), or None when it names none."""
    message = str(err)
    match = _SAMPLE_INDEX.match(message)
    if match and int(match.group(1)) < len(records):
        return DataError(f"{records[int(match.group(1))].where}: {message}")
    return None


def collate_records(
    records: Sequence[Record], collate_fn: Callable[..., Any], processor: Any, **options: Any
) -> Any:
    """``collate_fn`` on the records' examples as one batch; a ValueError names
    the failing record's line. An error that names no sample is found by
    collating the records one at a time."""
    examples = [r.example for r in records]
    try:
        return collate_fn(examples, processor, **options)
    except ValueError as err:
        error = located(err, records)
        if error is not None:
            raise error from err
        for index, record in enumerate(records):
            try:
                collate_fn([record.example], processor, **options)
            except ValueError as single:
                message = _SAMPLE_INDEX.sub(f"sample {index}", str(single), count=1)
                raise DataError(f"{record.where}: {message}") from err
        raise
