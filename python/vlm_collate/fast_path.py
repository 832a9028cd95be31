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
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from . import engine
from .engine import as_int64

logger = logging.getLogger("vlm_collate")

PROCESSORS = {
    "Qwen2VLProcessor": "transformers.models.qwen2_vl.processing_qwen2_vl",
    "Qwen2_5_VLProcessor": "transformers.models.qwen2_5_vl.processing_qwen2_5_vl",
    "Qwen3VLProcessor": "transformers.models.qwen3_vl.processing_qwen3_vl",
}
"""Processor classes (exact, not subclasses) whose image path the fast path reproduces."""

IMAGE_PROCESSOR = (
    "Qwen2VLImageProcessor",
    "transformers.models.qwen2_vl.image_processing_qwen2_vl",
)
"""The image processor it reproduces: transformers' torchvision one (the default in 5.x)."""

_BICUBIC = 3  # PIL.Image.Resampling.BICUBIC, PILImageResampling.BICUBIC


@dataclass(frozen=True)
class FastPlan:
    """What the fast path needs of a processor, read once: the resize rule's limits, the
    patch geometry, the byte table, the token ids and the output options."""

    min_pixels: int
    max_pixels: int
    patch_size: int
    merge_size: int
    temporal_patch_size: int
    table: torch.Tensor  # (768,) float32, byte -> rescaled and normalised value
    image_token_id: int
    type_ids: tuple[tuple[int, tuple[int, ...]], ...]  # (type, ids) for mm_token_type_ids
    mm_token_type_ids: bool
    pad_id: int


_PLANS: weakref.WeakKeyDictionary[Any, FastPlan | None] = weakref.WeakKeyDictionary()
_IDS: dict[int, FastPlan | None] = {}  # processors that take no weak reference


def _is_class(obj: Any, name: str, module: str) -> bool:
    cls = type(obj)
    return cls.__name__ == name and cls.__module__ == module


def _unsupported(processor: Any) -> str | None:
    """Why the fast path does not reproduce ``processor``, or None when it does."""
    name = type(processor).__name__
    if PROCESSORS.get(name) != type(processor).__module__:
        return (
            f"{name} is not one of transformers' {', '.join(PROCESSORS)} (subclass or other class)"
        )
    ip = getattr(processor, "image_processor", None)
    if ip is None or not _is_class(ip, *IMAGE_PROCESSOR):
        return f"its image processor {type(ip).__name__} is not transformers' {IMAGE_PROCESSOR[0]}"
    if not getattr(ip, "do_resize", False):
        return "do_resize=False"
    if int(getattr(ip, "resample", -1)) != _BICUBIC:
        return f"resample={ip.resample!r} (only bicubic is reproduced)"
    size = getattr(ip, "size", None)
    if not size or not size.get("shortest_edge") or not size.get("longest_edge"):
        return f"size={size!r} has no shortest_edge/longest_edge pixel limits"
    if getattr(ip, "device", None) not in (None, "cpu"):
        return f"the image processor runs on {ip.device}"
    for attribute in ("resize", "patchify", "rescale_and_normalize", "_preprocess", "preprocess"):
        if attribute in vars(ip):
            return f"the image processor's {attribute} is replaced on the instance"
    if not hasattr(processor, "image_token") or getattr(processor, "tokenizer", None) is None:
        return "it has no image_token or tokenizer"
    if getattr(processor.tokenizer, "pad_token_id", None) is None:
        return "its tokenizer has no pad token"
    return None


def _hashable(value: Any) -> Any:
    """A list of per-channel values as the tuple the processor's cached fusion takes."""
    return tuple(value) if isinstance(value, list) else value


def _table(ip: Any) -> torch.Tensor | None:
    """The processor's own rescale and normalise of every byte of every channel, or None
    when its output is not float32 (neither rescale nor normalise)."""
    values = torch.arange(256, dtype=torch.uint8).view(1, 1, 1, 256).expand(1, 3, 1, 256)
    out = ip.rescale_and_normalize(
        values.contiguous(),
        ip.do_rescale,
        ip.rescale_factor,
        ip.do_normalize,
        _hashable(ip.image_mean),
        _hashable(ip.image_std),
    )
    if out.dtype != torch.float32:
        return None
    return out.reshape(3 * 256).contiguous()


def _plan(processor: Any) -> FastPlan | None:
    reason = _unsupported(processor)
    table = None if reason else _table(processor.image_processor)
    if reason is None and table is None:
        reason = "do_rescale=False and do_normalize=False (uint8 pixel values)"
    if reason is not None:
        logger.info(
            "fast path off for %s: %s; using the processor call", type(processor).__name__, reason
        )
        return None
    ip, tokenizer = processor.image_processor, processor.tokenizer
    type_ids = tuple(
        (
            t,
            tuple(
                int(i)
                for i in (getattr(processor, f"{kind}_token_ids", None) or [])
                if i is not None
            ),
        )
        for t, kind in ((1, "image"), (2, "video"), (3, "audio"))
    )
    return FastPlan(
        min_pixels=int(ip.size["shortest_edge"]),
        max_pixels=int(ip.size["longest_edge"]),
        patch_size=int(ip.patch_size),
        merge_size=int(ip.merge_size),
        temporal_patch_size=int(ip.temporal_patch_size),
        table=table,
        image_token_id=int(processor.image_token_id),
        type_ids=type_ids,
        mm_token_type_ids=bool(getattr(processor, "return_mm_token_type_ids", False)),
        pad_id=int(tokenizer.pad_token_id),
    )


def fast_plan(processor: Any) -> FastPlan | None:
    """The fast path's plan for ``processor`` (decided once per processor), or None when
    its settings are not ones the fast path reproduces (the reason logged once)."""
    try:
        return (
            _PLANS[processor]
            if processor in _PLANS
            else _PLANS.setdefault(processor, _plan(processor))
        )
    except TypeError:  # not weak-referenceable
        key = id(processor)
        if key not in _IDS:
            _IDS[key] = _plan(processor)
        return _IDS[key]


def _threads() -> int:
    """Threads for the pixels: every core this process may use, one in a DataLoader worker."""
    if torch.utils.data.get_worker_info() is not None:
        return 1
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def target_sizes(images: Sequence[np.ndarray], plan: FastPlan) -> np.ndarray:
    """``(N, 2)`` height and width of each image after the processor's ``smart_resize``."""
    from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize

    factor = plan.patch_size * plan.merge_size
    sizes = [
        smart_resize(a.shape[0], a.shape[1], factor, plan.min_pixels, plan.max_pixels)
        for a in images
    ]
    return np.asarray(sizes, dtype=np.int64).reshape(-1, 2)


def output_tensor(shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised tensor for the output; in a DataLoader worker, in shared memory
    from the start (as torch's ``default_collate`` does there), so sending the batch to
    the main process pickles a handle instead of copying the tensor into shared memory."""
    numel = int(np.prod(shape))
    if torch.utils.data.get_worker_info() is None or numel == 0:
        return torch.empty(shape, dtype=dtype)
    itemsize = torch.empty((), dtype=dtype).element_size()
    storage = torch.UntypedStorage._new_shared(numel * itemsize)
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape)


def pixel_values(
    images: Sequence[Any], plan: FastPlan, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(pixel_values, image_grid_thw)`` of RGB ``images``, written once into one tensor
    of ``dtype`` (float32, bfloat16 or float16)."""
    arrays = [np.ascontiguousarray(np.asarray(image, dtype=np.uint8)) for image in images]
    targets = target_sizes(arrays, plan)
    geometry = (plan.patch_size, plan.merge_size, plan.temporal_patch_size)
    rows = engine.pixel_rows(targets, *geometry)
    width = 3 * plan.temporal_patch_size * plan.patch_size**2
    out = output_tensor((int(rows.sum()), width), dtype)
    if dtype == torch.float32:
        out_view, table = out.numpy(), plan.table.numpy()
    else:
        out_view = out.view(torch.int16).numpy().view(np.uint16)
        table = plan.table.to(dtype).view(torch.int16).numpy().view(np.uint16)
    engine.write_pixel_values(arrays, targets, out_view, table, *geometry, _threads())
    grids = np.ones((len(arrays), 3), dtype=np.int64)
    grids[:, 1:] = targets // plan.patch_size
    return out, torch.from_numpy(grids)


def _token_types(ids: np.ndarray, plan: FastPlan) -> np.ndarray:
    types = np.zeros_like(ids)
    for t, token_ids in plan.type_ids:
        if token_ids:
            types[np.isin(ids, token_ids)] = t
    return types


def fast_encoding(
    processor: Any,
    texts: Sequence[str],
    images: Sequence[Sequence[Any]],
    videos: Sequence[Sequence[Any]] = (),
    *,
    pixel_dtype: torch.dtype = torch.float32,
    add_special_tokens: bool = True,
) -> dict[str, torch.Tensor] | None:
    """What ``processor(text=texts, images=<images flattened>, padding=True,
    padding_side="right", return_tensors="pt")`` returns, built in one pass, or None
    when the fast path does not reproduce this processor or batch (videos, an image
    not RGB): then the caller calls the processor. ``images``: each sample's RGB
    images; placeholder counts are the caller's to check beforehand."""
    plan = fast_plan(processor)
    if plan is None or any(len(v) for v in videos):
        return None
    flat = [image for sample in images for image in sample]
    if any(getattr(image, "mode", "RGB") != "RGB" for image in flat):
        return None
    tokens = processor.tokenizer(list(texts), add_special_tokens=add_special_tokens)["input_ids"]
    values, offsets = engine.ragged(tokens)
    ids, mask = engine.pad_rows(values, offsets, plan.pad_id, "right")
    encoded: dict[str, torch.Tensor] = {}
    if flat:
        pixels, grids = pixel_values(flat, plan, pixel_dtype)
        counts = grids.numpy().prod(axis=1) // plan.merge_size**2
        per_row = np.fromiter((len(s) for s in images), dtype=np.int64, count=len(images))
        ids, mask = engine.expand_placeholders(
            ids, mask, plan.image_token_id, as_int64(counts), per_row, plan.pad_id, "right"
        )
    encoded["input_ids"] = torch.from_numpy(ids)
    encoded["attention_mask"] = torch.from_numpy(mask)
    if plan.mm_token_type_ids:
        encoded["mm_token_type_ids"] = torch.from_numpy(_token_types(ids, plan))
    if flat:
        encoded["pixel_values"] = pixels
        encoded["image_grid_thw"] = grids
    return encoded


def fast_call(processor: Any, options: Any) -> Any:
    """The shared encode step's ``call`` quirk for ``processor``: the fast encoding of
    the collected batch, or the processor call for a batch it does not reproduce
    (videos); None when ``options.fast_path`` is off or the processor's settings are
    not reproduced (the encode step then calls the processor itself)."""
    if not getattr(options, "fast_path", True) or fast_plan(processor) is None:
        return None

    def call(proc: Any, collected: Any) -> dict[str, Any]:
        encoded = fast_encoding(
            proc,
            collected.texts,
            collected.per_sample("image"),
            collected.per_sample("video"),
            add_special_tokens=False,
        )
        if encoded is not None:
            return encoded
        from .models.encode import processor_inputs

        return dict(
            proc(
                **processor_inputs(collected),
                padding=True,
                padding_side="right",
                add_special_tokens=False,
                return_tensors="pt",
            )
        )

    return call
