"""The fast path: a Qwen2-VL-family processor call reproduced in one pass.

Text: the rendered texts are tokenized unexpanded (one batch encode), each image
placeholder is expanded by the engine to ``t·h·w / merge²`` tokens and padded in the
same call, and ``mm_token_type_ids`` is one comparison. Pixels: the engine resizes
(the processor's ``smart_resize`` sizes, antialiased bicubic in torch's uint8
arithmetic), rescales, normalises (a 3 x 256 table made by the processor's own
``rescale_and_normalize``) and patchifies every image straight into its rows of one
preallocated ``pixel_values`` tensor of the final size and dtype, images in parallel,
GIL released; in a DataLoader worker that tensor is in shared memory from the start,
so the worker sends it without copying it again. The result equals the processor
call: same keys, same ids and grids, the same pixel values bit for bit (measured;
the tests allow no difference).

:func:`fast_encoding` decides once per processor whether its settings are ones this
reproduces; otherwise it returns ``None`` (the caller calls the processor), and the
reason is logged once per processor.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .. import engine
from ..engine import as_int64
from ..errors import CollateError
from ..processor.fast_plan import FastPlan, VideoPlan, budgeted, fast_plan, pan_and_scan_crops
from ..processor.media_tokens import pixel_budget
from ..processor.profile import ProcessorProfile, profile_of
from ..processor.tokens import batch_token_ids
from .pil_buffer import rgbx_view

logger = logging.getLogger("vlm_collate")


def _threads() -> int:
    """Threads for the pixels: every core this process may use, one in a DataLoader worker."""
    if torch.utils.data.get_worker_info() is not None:
        return 1
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _height_width(image: Any) -> tuple[int, int]:
    if hasattr(image, "shape"):
        return int(image.shape[0]), int(image.shape[1])
    return int(image.height), int(image.width)


def target_sizes(images: Sequence[np.ndarray], plan: FastPlan) -> np.ndarray:
    """``(N, 2)`` height and width of each image (an ``(H, W, 3)`` array or a PIL image)
    after the processor's resize rule: its family's ``smart_resize`` (Qwen2-VL's, or
    GLM-4.1V's, which counts ``temporal_patch_size`` frames against the limits), or the
    fixed ``size``."""
    if plan.rule == "fixed":
        assert plan.fixed_size is not None
        return np.tile(np.asarray(plan.fixed_size, dtype=np.int64), (len(images), 1))
    factor = plan.patch_size * plan.merge_size
    if plan.rule == "glm":
        from transformers.models.glm4v.image_processing_glm4v import smart_resize as glm_resize

        t = plan.temporal_patch_size
        sizes = [
            glm_resize(t, *_height_width(a), t, factor, plan.min_pixels, plan.max_pixels)
            for a in images
        ]
    else:
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

        sizes = [
            smart_resize(*_height_width(a), factor, plan.min_pixels, plan.max_pixels)
            for a in images
        ]
    return np.asarray(sizes, dtype=np.int64).reshape(-1, 2)


class OutputBuffers:
    """Output storage reused across calls, per thread, once its last batch is let go.

    A steady-state call then writes into memory already paged in instead of a fresh
    allocation (a 37 MiB ``pixel_values`` costs more to fault in than to fill). A
    storage is handed out again only when nothing else refers to it: its ``StorageImpl``
    has one owner (this pool's ``UntypedStorage``; every tensor, view, ``.numpy()``
    array and DLPack capsule made from it holds another) and that Python object has no
    other reference (``tensor.untyped_storage()`` returns the same object). A batch the
    caller still holds is therefore never overwritten. ``keep`` storages are kept per
    thread (two cover ``for batch in loader``, which holds the previous batch while the
    next is built); a storage is reused for a request of at least ``1 / slack`` of its
    size, so a small batch does not pin a large buffer's memory."""

    def __init__(self, keep: int = 2, slack: float = 1.5):
        self.keep, self.slack = keep, slack
        self._local = threading.local()

    def _pool(self) -> list[torch.UntypedStorage]:
        pool = getattr(self._local, "pool", None)
        if pool is None:
            pool = self._local.pool = []
        return pool

    @staticmethod
    def _free(pool: list[torch.UntypedStorage], i: int) -> bool:
        """Whether only ``pool`` refers to its ``i``-th storage (no tensor, view or array
        of it, and no other reference to its Python object)."""
        # The StorageImpl's one owner is the pool's Python object; getrefcount counts
        # the list and its own argument.
        return torch._C._storage_Use_Count(pool[i]._cdata) == 1 and sys.getrefcount(pool[i]) == 2

    def storage(self, nbytes: int) -> torch.UntypedStorage:
        """A storage of at least ``nbytes``: a free one of the pool, or a new one."""
        pool = self._pool()
        fits = [
            i
            for i in range(len(pool))
            if nbytes <= pool[i].nbytes() <= max(nbytes * self.slack, 1) and self._free(pool, i)
        ]
        if fits:
            found = pool.pop(min(fits, key=lambda i: pool[i].nbytes()))
        else:
            found = torch.UntypedStorage(nbytes)
        pool.insert(0, found)  # most recently used first
        del pool[self.keep :]
        return found

    def tensor(self, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
        """An uninitialised tensor of ``shape`` and ``dtype`` on a pooled storage."""
        itemsize = torch.empty((), dtype=dtype).element_size()
        storage = self.storage(int(np.prod(shape)) * itemsize)
        return torch.empty(0, dtype=dtype).set_(storage, 0, shape)

    def clear(self) -> None:
        """Drops this thread's pooled storages (held batches stay valid)."""
        self._pool().clear()


BUFFERS = OutputBuffers()
"""The pool :func:`output_tensor` draws from outside DataLoader workers."""


def output_tensor(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor for the output. In a DataLoader worker it is in shared
    memory from the start (as torch's ``default_collate`` does there), so sending the
    batch to the main process pickles a handle instead of copying the tensor into shared
    memory; elsewhere it reuses a storage of :data:`BUFFERS` that no earlier batch still
    refers to (:class:`OutputBuffers`)."""
    numel = int(np.prod(shape))
    if numel == 0:
        return torch.empty(shape, dtype=dtype)
    if torch.utils.data.get_worker_info() is None:
        return BUFFERS.tensor(shape, dtype)
    itemsize = torch.empty((), dtype=dtype).element_size()
    storage = torch.UntypedStorage._new_shared(numel * itemsize)
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape)


def engine_pixels(image: Any) -> np.ndarray:
    """What the engine reads of an RGB ``image``: a PIL image's own buffer (an
    ``(H, W, 4)`` RGBX view, no copy: :func:`.pil_buffer.rgbx_view`) where Pillow
    exports it, else a C-contiguous ``(H, W, 3)`` uint8 array (a copy only when the
    image is not one already)."""
    view = rgbx_view(image)
    if view is not None:
        return view
    return np.ascontiguousarray(np.asarray(image, dtype=np.uint8))


def pixel_values(
    images: Sequence[Any],
    plan: FastPlan,
    dtype: torch.dtype = torch.float32,
    order: Sequence[int] | np.ndarray | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pixel_values, image_grid_thw)`` of RGB ``images``, written once into one tensor
    of ``dtype`` (float32, bfloat16 or float16). ``order``: the order the images' rows
    are written in (a permutation of their indices; default as given); the grids stay
    in the given order."""
    out, grids, write = deferred_pixel_values(images, plan, dtype)
    write(order)
    return out, grids


def deferred_pixel_values(
    images: Sequence[Any], plan: FastPlan, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor, Callable[[Sequence[int] | np.ndarray | None], None]]:
    """``(pixel_values, image_grid_thw, write)``: the tensor allocated (final shape and
    dtype, uninitialised) and the grids, and ``write(order)``, which fills the tensor with
    the images' rows in ``order`` (a permutation of their indices; None: as given). The
    order can thus be decided after the tensor exists (packing: :func:`packing_order`)."""
    arrays = [engine_pixels(image) for image in images]
    given = target_sizes(arrays, plan)
    grids = torch.from_numpy(_grids(given, plan))
    geometry = (plan.patch_size, plan.merge_size, plan.temporal_patch_size)
    crops: list[list[tuple[int, int, int, int]]] = []
    if not plan.patchified:  # channels-first images of one fixed size (Gemma 3)
        height, width = plan.fixed_size or (0, 0)
        found = image_crops(arrays, plan)
        if found is None:
            raise CollateError(
                "an image is too small for its pan-and-scan crops; the processor call "
                "reports which (fast_path=False)"
            )
        crops = found
        out = output_tensor((len(arrays) + sum(map(len, crops)), 3, height, width), dtype)
    else:
        rows = int(engine.pixel_rows(given, *geometry).sum())
        out = output_tensor((rows, 3 * plan.temporal_patch_size * plan.patch_size**2), dtype)

    def write(order: Sequence[int] | np.ndarray | None = None) -> None:
        chosen, targets = arrays, given
        if order is not None:
            index = np.asarray(order, dtype=np.int64)
            chosen, targets = [arrays[int(i)] for i in index], given[index]
        if not plan.patchified:  # the shared tiled step: whole images and crops alike
            index = range(len(arrays)) if order is None else [int(i) for i in order]
            resizes, tiles = _crop_rows(crops, index, (height, width))
            out_view, table = _typed(out, plan.table)
            fills = np.zeros(3, dtype=table.dtype)  # no window reaches past its resize
            engine.write_tiles(
                chosen, resizes, tiles, out_view, table, fills, plan.interpolation, _threads()
            )
        else:
            out_view, table = _typed(out, plan.table)
            engine.write_pixel_values(chosen, targets, out_view, table, *geometry, _threads())

    return out, grids, write


def image_crops(
    images: Sequence[Any], plan: FastPlan
) -> list[list[tuple[int, int, int, int]]] | None:
    """Each image's pan-and-scan crops ``(top, left, height, width)`` as Gemma 3's
    processor call cuts them (empty lists when it does not pan and scan), or None when
    one would be empty (the processor's error, reported by calling it)."""
    if plan.pan_and_scan is None:
        return [[] for _ in images]
    found = [pan_and_scan_crops(*_height_width(image), plan.pan_and_scan) for image in images]
    return None if any(c is None for c in found) else found  # type: ignore[misc]


def _crop_rows(
    crops: Sequence[Sequence[tuple[int, int, int, int]]],
    order: Sequence[int],
    size: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """``engine.write_tiles``' rows for Gemma 3's pan-and-scan, images written in ``order``
    (indices into the images ``write_tiles`` is given in that order): each image's
    frames, the whole image resized to ``size`` and then each crop of it resized to
    ``size``, one after another."""
    height, width = size
    resizes: list[tuple[int, ...]] = []
    for position, i in enumerate(order):
        resizes.append((position, -1, height, width, -1, -1, -1, -1))
        resizes += [(position, -1, height, width, *crop) for crop in crops[i]]
    rows = np.asarray(resizes, dtype=np.int64).reshape(-1, 8)
    tiles = np.zeros((len(rows), 5), dtype=np.int64)
    tiles[:, 0] = tiles[:, 3] = np.arange(len(rows))  # resize k is slot k, window at (0, 0)
    return rows, tiles


def _typed(out: torch.Tensor, table: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """``out`` and the byte table as the arrays the engine writes: float32, or uint16
    views of 16-bit float bits."""
    if out.dtype == torch.float32:
        return out.numpy(), table.numpy()
    return (
        out.view(torch.int16).numpy().view(np.uint16),
        table.to(out.dtype).view(torch.int16).numpy().view(np.uint16),
    )


def _grids(targets: np.ndarray, plan: FastPlan) -> np.ndarray:
    grids = np.ones((len(targets), 3), dtype=np.int64)
    grids[:, 1:] = targets // plan.patch_size
    return grids


@dataclass
class _Deferred:
    """One fast encoding's ``pixel_values``, not written yet: the tensor, the images per
    sample and the writer (:func:`deferred_pixel_values`)."""

    pixels: torch.Tensor
    per_sample: np.ndarray
    write: Callable[[Sequence[int] | np.ndarray | None], None]


@dataclass
class PackingOrder:
    """The pixels fast encodings left unwritten inside :func:`packing_order`, for the
    packer to write in its final document order (:meth:`fill`)."""

    deferred: list[_Deferred] = field(default_factory=list)

    def fill(self, pixels: Any, samples: np.ndarray) -> np.ndarray | None:
        """Writes ``pixels`` (the batch's ``pixel_values``) with the samples' images in
        ``samples`` order, when it is a tensor a fast encoding left unwritten; returns
        ``samples`` (the order written) then, else None (pixels in sample order, written
        already). Every other unwritten tensor is dropped (batches the pipeline discarded,
        e.g. before dropping a sample); an unwritten tensor that shares the batch's
        memory without being it is an error, never returned unwritten."""
        pending, self.deferred = self.deferred, []
        found = next((d for d in pending if d.pixels is pixels), None)
        if isinstance(pixels, torch.Tensor) and pixels.numel():
            address = pixels.untyped_storage().data_ptr()
            for d in pending:
                if d is not found and d.pixels.untyped_storage().data_ptr() == address:
                    raise CollateError(
                        "the batch's pixel_values share memory with pixels the fast path has "
                        "not written yet; report this as a bug (fast_path=False avoids it)"
                    )
        if found is None:
            return None
        samples = np.asarray(samples, dtype=np.int64)
        if len(samples) != len(found.per_sample) or sorted(samples.tolist()) != list(
            range(len(samples))
        ):
            found.write(None)  # not a permutation of the samples: in sample order
            return None
        starts = np.concatenate([[0], np.cumsum(found.per_sample)]).astype(np.int64)
        images = [np.arange(starts[d], starts[d + 1]) for d in samples]
        found.write(np.concatenate(images) if images else None)
        return samples


_PACKING: ContextVar[PackingOrder | None] = ContextVar("vlm_collate_packing", default=None)


@contextmanager
def packing_order() -> Iterator[PackingOrder]:
    """Within this block a fast encoding allocates its ``pixel_values`` (final shape,
    in shared memory in a DataLoader worker) but does not write it: the yielded
    :class:`PackingOrder` holds the writer, and the packer, once the final lengths have
    given its document order, writes the rows in that order (:meth:`PackingOrder.fill`),
    so packing copies no pixel. ``image_grid_thw`` and the token-axis tensors stay in
    sample order. Whoever opens the block must fill the batch it returns."""
    state = PackingOrder()
    token = _PACKING.set(state)
    try:
        yield state
    finally:
        _PACKING.reset(token)


def video_array(video: Any) -> np.ndarray | None:
    """A video (a ``(T, H, W, 3)`` uint8 array, or a list of same-size RGB frames) as the
    C-contiguous ``(T, H, W, 3)`` uint8 array the processor reads, or None for one the
    fast path leaves to the processor (a path, channels first, other channel counts,
    frames of different sizes or modes)."""
    if isinstance(video, (list, tuple)):
        if not video or any(getattr(f, "mode", None) != "RGB" for f in video):
            return None
        if len({f.size for f in video}) != 1:
            return None
        return np.stack([np.asarray(f, dtype=np.uint8) for f in video])
    if not isinstance(video, np.ndarray) or video.dtype != np.uint8 or video.ndim != 4:
        return None
    # The processor infers channels first when axis 1 could be channels (1 or 3).
    if video.shape[3] != 3 or video.shape[1] in (1, 3):
        return None
    return np.ascontiguousarray(video)


def _video_arrays(videos: Sequence[Sequence[Any]], plan: FastPlan) -> list[np.ndarray] | None:
    """Every video of the batch as an array, or None when one is left to the processor."""
    clips = []
    for video in (v for sample in videos for v in sample):
        array = video_array(video) if plan.video is not None else None
        if array is None:
            return None
        clips.append(array)
    return clips


def video_targets(videos: Sequence[np.ndarray], plan: VideoPlan) -> np.ndarray:
    """``(N, 2)`` height and width of each video's frames after the video processor's
    ``smart_resize`` (with its per-frame cap when ``cap_pixels_per_frame`` is on)."""
    from transformers.models.qwen2_vl.video_processing_qwen2_vl import smart_resize

    factor = plan.patch_size * plan.merge_size
    if plan.rule in ("qwen3", "glm"):
        return _qwen3_targets(videos, plan)
    sizes = []
    for v in videos:
        max_pixels = plan.max_pixels
        if plan.cap_pixels_per_frame:  # as the video processor's resize bounds it
            total = int(plan.max_video_tokens * factor * factor * 0.9)
            max_pixels = max(
                min(max_pixels, total * plan.temporal_patch_size // v.shape[0]),
                int(plan.min_pixels * 1.05),
            )
        sizes.append(smart_resize(v.shape[1], v.shape[2], factor, plan.min_pixels, max_pixels))
    return np.asarray(sizes, dtype=np.int64).reshape(-1, 2)


def _qwen3_targets(videos: Sequence[np.ndarray], plan: VideoPlan) -> np.ndarray:
    """Qwen3-VL's and GLM-4.1V's video sizes: their ``smart_resize`` counts the frames
    against the limits (and Qwen3-VL's per-frame cap, when on, is its own; GLM-4.1V's video
    processor has none)."""
    if plan.rule == "glm":
        from transformers.models.glm4v.video_processing_glm4v import smart_resize
    else:
        from transformers.models.qwen3_vl.video_processing_qwen3_vl import smart_resize

    factor = plan.patch_size * plan.merge_size
    sizes = []
    for v in videos:
        frames, max_pixels = int(v.shape[0]), plan.max_pixels
        if plan.cap_pixels_per_frame and plan.rule == "qwen3":  # as its resize bounds it
            cap = plan.max_video_tokens * factor * factor
            per_frame = max(min(cap, plan.max_pixels // frames), int(plan.min_pixels * 1.05))
            max_pixels = per_frame * frames
        sizes.append(
            smart_resize(
                frames,
                int(v.shape[1]),
                int(v.shape[2]),
                temporal_factor=plan.temporal_patch_size,
                factor=factor,
                min_pixels=plan.min_pixels,
                max_pixels=max_pixels,
            )
        )
    return np.asarray(sizes, dtype=np.int64).reshape(-1, 2)


def _timed_videos(
    profile: ProcessorProfile,
    plan: VideoPlan,
    clips: list[np.ndarray],
    texts: Sequence[str],
    metadata: Sequence[Any] | None,
) -> tuple[list[np.ndarray], list[str], np.ndarray] | None:
    """Qwen3-VL's (and GLM-4.1V's) videos as its processor makes them: each clip's frames
    sampled by its video processor's own ``sample_frames`` (when ``do_sample_frames``; with
    the metadata it makes for frames given without any, so a 24 fps default) or taken as
    given with their ``metadata`` (fps budgets, sampled by the encode step), and each
    ``<|video_pad|>`` of ``texts`` replaced, in batch order, by one
    ``<t seconds><|vision_start|><|video_pad|><|vision_end|>`` per temporal group (the
    processor's ``_calculate_timestamps``; the engine then expands each pad to the
    group's tokens). GLM-4.1V: one ``<|begin_of_image|><|image|><|end_of_image|>`` and the
    whole second of the group's first frame per temporal group (its
    ``replace_video_token``; the image token, expanded with the images). Returns the
    clips, the texts and each clip's temporal groups, or None for a clip the processor
    refuses (fewer frames than a temporal patch; GLM-4.1V sampling without a rate)."""
    from transformers.video_utils import VideoMetadata

    processor, vp = profile.processor, profile.processor.video_processor
    sampled, replacements, groups = [], [], []
    for k, clip in enumerate(clips):
        frames = int(clip.shape[0])
        if metadata is None:
            if plan.sample_frames and plan.rule == "glm":
                return None  # GLM-4.1V samples by the source rate: the processor refuses
            meta = VideoMetadata(
                total_num_frames=frames,
                fps=None,
                duration=None,
                frames_indices=list(range(frames)),
                height=int(clip.shape[1]),
                width=int(clip.shape[2]),
            )
            if plan.sample_frames:
                indices = vp.sample_frames(metadata=meta, num_frames=vp.num_frames, fps=vp.fps)
                meta.frames_indices = indices
                clip = clip[np.asarray(indices)]
        else:
            meta = VideoMetadata(**metadata[k])
        if clip.shape[0] < plan.temporal_patch_size:
            return None  # the processor raises its own error for it
        fps = 24 if meta.fps is None else meta.fps  # as the processor defaults it
        count = -(-int(clip.shape[0]) // plan.temporal_patch_size)
        start, end = plan.vision_tokens
        if plan.rule == "glm":  # Glm4vProcessor.replace_video_token
            meta.fps = fps
            seconds = list(meta.timestamps[::2][:count])
            seconds += [seconds[-1] if seconds else 0] * (count - len(seconds))
            replacements.append("".join(f"{start}{plan.frame_token}{end}{int(t)}" for t in seconds))
        else:
            stamps = processor._calculate_timestamps(
                meta.frames_indices, fps, plan.temporal_patch_size
            )
            replacements.append(
                "".join(
                    f"<{stamps[g]:.1f} seconds>{start}{plan.video_token}{end}" for g in range(count)
                )
            )
        sampled.append(np.ascontiguousarray(clip))
        groups.append(count)
    pieces = iter(replacements)
    out = []
    for text in texts:
        parts = text.split(plan.video_token)
        out.append(parts[0] + "".join(next(pieces) + part for part in parts[1:]))
    return sampled, out, np.asarray(groups, dtype=np.int64)


def _glm_placeholder_counts(
    plan: FastPlan,
    images: Sequence[Any],
    clips: Sequence[np.ndarray],
    texts: Sequence[str],
    per_sample: Sequence[Sequence[Any]],
) -> tuple[np.ndarray, np.ndarray]:
    """GLM-4.1V writes each video frame group as an image block with its image token:
    per row, how many image-token placeholders it holds, and each one's token count in
    text order (an image's ``h·w / merge²``; a video's frame groups, each its frames'
    ``h·w / merge²``), from ``texts`` before the videos were written out."""
    import re

    video = plan.video
    assert video is not None
    merge = plan.merge_size**2
    image_counts = iter(
        (_grids(target_sizes(images, plan), plan).prod(axis=1) // merge).tolist() if images else []
    )
    targets = video_targets(clips, video)
    frame_tokens = (targets // video.patch_size).prod(axis=1) // video.merge_size**2
    groups = [-(-int(c.shape[0]) // video.temporal_patch_size) for c in clips]
    video_counts = iter(zip(frame_tokens.tolist(), groups))
    pattern = re.compile(f"{re.escape(video.frame_token)}|{re.escape(video.video_token)}")
    placeholders, counts = [], []
    for text in texts:
        row = 0
        for match in pattern.finditer(text):
            if match.group() == video.video_token:
                tokens, n = next(video_counts)
                counts += [tokens] * n
                row += n
            else:
                counts.append(next(image_counts))
                row += 1
        placeholders.append(row)
    return np.asarray(placeholders, dtype=np.int64), np.asarray(counts, dtype=np.int64)


def video_pixel_values(
    videos: Sequence[np.ndarray], plan: VideoPlan, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pixel_values_videos, video_grid_thw)`` of ``(T, H, W, 3)`` uint8 ``videos``
    (from :func:`video_array`), written once into one tensor of ``dtype``."""
    targets = video_targets(videos, plan)
    frames = np.fromiter((v.shape[0] for v in videos), dtype=np.int64, count=len(videos))
    geometry = (plan.patch_size, plan.merge_size, plan.temporal_patch_size)
    rows = engine.pixel_rows(targets, *geometry, frames)
    width = 3 * plan.temporal_patch_size * plan.patch_size**2
    out = output_tensor((int(rows.sum()), width), dtype)
    if dtype == torch.float32:
        out_view, table = out.numpy(), plan.table.numpy()
    else:
        out_view = out.view(torch.int16).numpy().view(np.uint16)
        table = plan.table.to(dtype).view(torch.int16).numpy().view(np.uint16)
    engine.write_video_pixel_values(list(videos), targets, out_view, table, *geometry, _threads())
    grids = np.empty((len(videos), 3), dtype=np.int64)
    grids[:, 0] = -(-frames // plan.temporal_patch_size)
    grids[:, 1:] = targets // plan.patch_size
    return out, torch.from_numpy(grids)


def seconds_per_grid(
    videos: Sequence[np.ndarray], plan: VideoPlan, metadata: Sequence[Any] | None = None
) -> torch.Tensor:
    """``second_per_grid_ts`` as Qwen2.5-VL's processor computes it: the temporal patch
    size over each video's sampled fps (``VideoMetadata.sampled_fps``), from its
    ``metadata`` (flat, one per video, as the encode step passes the processor under an
    fps budget) or the metadata the processor makes for frames given without metadata
    (all frames kept, no fps)."""
    from transformers.video_utils import VideoMetadata

    if metadata is None:
        metadata = [
            {"total_num_frames": len(v), "fps": None, "frames_indices": list(range(len(v)))}
            for v in videos
        ]
    fps = [VideoMetadata(**m).sampled_fps for m in metadata]
    return torch.tensor([plan.temporal_patch_size / f for f in fps])


def _videos(
    clips: list[np.ndarray],
    videos: Sequence[Sequence[Any]],
    ids: np.ndarray,
    mask: np.ndarray,
    plan: FastPlan,
    dtype: torch.dtype,
    metadata: Sequence[Any] | None = None,
    expand: bool = True,
) -> tuple[dict[str, torch.Tensor], np.ndarray, np.ndarray]:
    """The video keys of the encoding, and ``ids``/``mask`` with every video placeholder
    expanded to ``t·h·w / merge²`` tokens (``expand=False``: left as they are, GLM-4.1V's
    frames having been expanded with the images)."""
    video = plan.video
    assert video is not None
    pixels, grids = video_pixel_values(clips, video, dtype)
    counts = grids.numpy().prod(axis=1) // video.merge_size**2
    per_row = np.fromiter((len(s) for s in videos), dtype=np.int64, count=len(videos))
    if video.rule == "qwen3":  # one placeholder per temporal group (its timestamp before)
        frames = grids.numpy()[:, 0]
        counts = np.repeat(counts // frames, frames)
        starts = np.concatenate([[0], np.cumsum(per_row)]).astype(np.int64)
        per_row = np.asarray(
            [frames[a:b].sum() for a, b in zip(starts[:-1], starts[1:])], dtype=np.int64
        )
    if expand:
        ids, mask = engine.expand_placeholders(
            ids, mask, video.video_token_id, as_int64(counts), per_row, plan.pad_id, "right"
        )
    encoded = {"pixel_values_videos": pixels, "video_grid_thw": grids}
    if video.second_per_grid_ts:
        encoded["second_per_grid_ts"] = seconds_per_grid(clips, video, metadata)
    return encoded, ids, mask


def _token_types(ids: np.ndarray, plan: FastPlan) -> np.ndarray:
    types = np.zeros_like(ids)
    for t, token_ids in plan.type_ids:
        if len(token_ids) == 1:
            types[ids == token_ids[0]] = t
        elif token_ids:
            types[np.isin(ids, token_ids)] = t
    if plan.video_span is not None:  # GLM-4.1V: image tokens inside a video's span are 2
        start, end = plan.video_span
        inside = np.cumsum(ids == start, axis=1) > np.cumsum(ids == end, axis=1)
        types[(types == 1) & inside] = 2
    return types


def _replaced(texts: Sequence[str], plan: FastPlan, crops: Sequence[Sequence[Any]]) -> list[str]:
    """``texts`` with each image's placeholder replaced by its text (``plan.placeholder``'s
    short block; with Gemma 3's pan-and-scan, where the image has crops, the processor's
    sentence around the image's block and one block per crop), images in order."""
    assert plan.placeholder is not None
    placeholder, block = plan.placeholder
    pan = plan.pan_and_scan
    if pan is None:
        return [text.replace(placeholder, block) for text in texts]
    written = iter(
        f"{pan.intro}{block}{pan.between}" + " ".join([block] * len(c)) if c else block
        for c in crops
    )
    out = []
    for text in texts:
        parts = text.split(placeholder)
        out.append(parts[0] + "".join(next(written) + part for part in parts[1:]))
    return out


def fast_encoding(
    processor: Any,
    texts: Sequence[str],
    images: Sequence[Sequence[Any]],
    videos: Sequence[Sequence[Any]] = (),
    *,
    pixel_dtype: torch.dtype = torch.float32,
    add_special_tokens: bool = True,
    budget: tuple[int, int] | None = None,
    video_metadata: Sequence[Sequence[Any]] | None = None,
) -> dict[str, torch.Tensor] | None:
    """What ``processor(text=texts, images=<images flattened>, videos=<videos flattened>,
    padding=True, padding_side="right", return_tensors="pt")`` returns, built in one
    pass, or None when the fast path does not reproduce this processor or batch (videos
    without a video plan or in a form :func:`video_array` leaves to the processor, an
    image not RGB): then the caller calls the processor. ``processor``: the processor or
    its profile; ``images``, ``videos``: each sample's RGB images and videos; placeholder
    counts are the caller's to check beforehand. ``budget``: ``(min_pixels, max_pixels)``
    of the images' resize rule instead of the processor's own
    (:func:`~vlm_collate.processor.media_tokens.pixel_budget`). ``video_metadata``: each
    sample's videos' metadata as the processor would be given it (fps budgets)."""
    profile = profile_of(processor)
    plan = fast_plan(profile)
    if plan is None:
        return None
    plan = budgeted(plan, budget)
    flat = [image for sample in images for image in sample]
    if any(getattr(image, "mode", "RGB") != "RGB" for image in flat):
        return None
    clips = _video_arrays(videos, plan)
    if clips is None:
        return None
    flat_metadata = (
        None if video_metadata is None else [m for sample in video_metadata for m in sample]
    )
    frame_counts = None  # GLM-4.1V: per row, its image and video frame token counts
    if clips and plan.video is not None and plan.video.rule in ("qwen3", "glm"):
        timed = _timed_videos(profile, plan.video, clips, texts, flat_metadata)
        if timed is None:
            return None
        if plan.video.rule == "glm":
            frame_counts = _glm_placeholder_counts(plan, flat, timed[0], texts, images)
        clips, texts, _ = timed
    crops = image_crops(flat, plan)
    if crops is None:
        return None
    if plan.placeholder is not None and flat:
        texts = _replaced(texts, plan, crops)
    tokens = batch_token_ids(profile.tokenizer, texts, add_special_tokens)
    values, offsets = engine.ragged(tokens)
    ids, mask = engine.pad_rows(values, offsets, plan.pad_id, "right")
    encoded: dict[str, torch.Tensor] = {}
    packing = _PACKING.get()
    if flat:
        if plan.patchified:
            counts = _grids(target_sizes(flat, plan), plan).prod(axis=1) // plan.merge_size**2
        else:  # Gemma 3: one block per image and per crop, each of tokens_per_image
            blocks = len(flat) + sum(map(len, crops))
            counts = np.full(blocks, plan.tokens_per_image, dtype=np.int64)
        per_row = np.fromiter((len(s) for s in images), dtype=np.int64, count=len(images))
        blocks_per_row = per_row
        if plan.pan_and_scan is not None:
            frames = np.cumsum([0] + [1 + len(c) for c in crops], dtype=np.int64)
            ends = np.cumsum(per_row)
            blocks_per_row = frames[ends] - frames[ends - per_row]
        if frame_counts is None:
            ids, mask = engine.expand_placeholders(
                ids, mask, plan.image_token_id, as_int64(counts), blocks_per_row, plan.pad_id,
                "right",
            )  # fmt: skip
        if packing is not None:  # written by the packer, in its final order
            pixels, grids, write = deferred_pixel_values(flat, plan, pixel_dtype)
            packing.deferred.append(_Deferred(pixels, per_row, write))
        else:
            pixels, grids = pixel_values(flat, plan, pixel_dtype)
    if frame_counts is not None:  # GLM-4.1V: images and video frames share the token
        placeholders, counts_in_order = frame_counts
        ids, mask = engine.expand_placeholders(
            ids, mask, plan.image_token_id, counts_in_order, placeholders, plan.pad_id, "right"
        )
    if clips:
        videos_encoded, ids, mask = _videos(
            clips, videos, ids, mask, plan, pixel_dtype, flat_metadata, frame_counts is None
        )
    encoded["input_ids"] = torch.from_numpy(ids)
    encoded["attention_mask"] = torch.from_numpy(mask)
    types = torch.from_numpy(_token_types(ids, plan)) if plan.mm_token_type_ids else None
    if types is not None and plan.type_key == "mm_token_type_ids":
        encoded["mm_token_type_ids"] = types
    if flat:
        encoded["pixel_values"] = pixels
        if plan.patchified:
            encoded["image_grid_thw"] = grids
    if clips:
        encoded.update(videos_encoded)
    if types is not None and plan.type_key != "mm_token_type_ids":
        encoded[plan.type_key] = types  # Gemma 3 renames it last
    return encoded


def fast_call(profile: ProcessorProfile, options: Any) -> Any:
    """The shared encode step's ``call`` quirk: the fast encoding of the collected batch,
    or None for a batch it does not reproduce (videos it does not cover; the encode step
    then calls the processor). None instead of a quirk when ``options.fast_path`` is off or the
    processor's settings are not reproduced."""
    if not getattr(options, "fast_path", True) or fast_plan(profile) is None:
        return None

    budget = pixel_budget(profile, options.min_pixels, options.max_pixels)

    def call(profile: ProcessorProfile, collected: Any) -> dict[str, Any] | None:
        return fast_encoding(
            profile,
            collected.texts,
            collected.per_sample("image"),
            collected.per_sample("video"),
            add_special_tokens=False,
            budget=getattr(collected, "budget", budget),  # per-row/shrunk budgets applied
            video_metadata=getattr(collected, "video_metadata", None),  # fps budgets
        )

    return call
