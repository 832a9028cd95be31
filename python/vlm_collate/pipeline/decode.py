"""A batch's media loaded in parallel.

Decoding a JPEG or PNG is most of what loading a file costs, and Pillow releases the
GIL while it decodes, so the samples of a batch that hold image files or bytes are
loaded on a thread pool: every core this process may use, one thread (no pool) in a
DataLoader worker, whose parallelism is the workers themselves. Each sample is loaded
by the same function as before (``load``, by default :func:`.encode.loaded_media`, which
calls ``load_image`` per item), so the images, checks and errors are the sequential
ones; when several samples fail, the first in batch order is raised, as sequentially.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from .fast_path import _threads
from .media import SampleMedia, media_of


def _is_file_data(value: Any) -> bool:
    """Whether an image value needs decoding (a path, bytes, base64 text or a datasets
    image dict), not pixels already decoded."""
    if isinstance(value, Mapping):
        return not {"bytes", "path"}.isdisjoint(value)
    return isinstance(value, (bytes, bytearray, memoryview, str, os.PathLike))


def _decodes(conversation: Any, index: int) -> bool:
    try:
        return any(_is_file_data(v) for v in media_of(conversation, index, ("image",)).images)
    except Exception:  # a malformed item: the sequential load reports it
        return False


def decode_threads(samples_to_decode: int) -> int:
    """Threads for decoding ``samples_to_decode`` samples: at most one per sample and
    per core this process may use; one in a DataLoader worker."""
    return max(1, min(_threads(), samples_to_decode))


def loaded_batch(
    load: Callable[..., SampleMedia],
    examples: Sequence[Any],
    conversations: Sequence[Any],
    indices: Sequence[int],
    profile: Any,
    base_dir: Any,
) -> list[SampleMedia]:
    """``[load(example, conversation, index, profile, base_dir) for each sample]``, the
    samples holding image files or bytes loaded on a thread pool (GIL released while
    Pillow decodes), in batch order."""
    jobs = list(zip(examples, conversations, indices))
    decoding = sum(_decodes(c, i) for _, c, i in jobs)
    threads = decode_threads(decoding)
    if threads <= 1 or len(jobs) < 2:
        return [load(e, c, i, profile, base_dir) for e, c, i in jobs]
    with ThreadPoolExecutor(threads, thread_name_prefix="vlm_collate-decode") as pool:
        return list(pool.map(lambda job: load(*job, profile, base_dir), jobs))


__all__ = ["decode_threads", "loaded_batch"]
