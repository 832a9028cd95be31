"""Kimi K2.5: image placeholders expanded to their token counts before the model runs,
so sequence length is fixed (pipeline parallelism)."""

from __future__ import annotations

import inspect
from typing import Any

import numpy as np
import torch

from .. import engine
from ..conversation import rendered_texts
from ..engine import as_int64, ragged
from ..expand import check_expanded_media, expand_image_tokens
from ..media import flattened, media_per_sample
from ..options import seed_options
from ..pipeline import collate_with
from ..report import Batch
from ..tokens import pad_token_id, token_id, tokenizer_of

_PLACEHOLDER = "<|media_pad|>"


def media_token_id(processor: Any) -> int:
    """Id of the image placeholder, from the processor or its tokenizer, checked
    against the tokenizer's unknown id (never a hard-coded id)."""
    tokenizer = tokenizer_of(processor)
    for owner in (processor, tokenizer):
        for attribute in ("media_placeholder_token_id", "image_token_id"):
            tid = getattr(owner, attribute, None)
            if isinstance(tid, (int, np.integer)) and tid >= 0 and tid != tokenizer.unk_token_id:
                return int(tid)
    token = getattr(processor, "image_token", None) or _PLACEHOLDER
    return token_id(tokenizer, token, what="image placeholder token")


def _merge_kernel(processor: Any) -> tuple[int, int]:
    image_processor = getattr(processor, "image_processor", None)
    kernel = getattr(image_processor, "merge_kernel_size", None)
    if kernel is not None:
        return (int(kernel[0]), int(kernel[1]))
    merge = int(getattr(image_processor, "merge_size", None) or 2)
    return (merge, merge)


def _takes_medias(processor: Any) -> bool:
    """Whether the processor is the original remote-code one (``medias=`` argument,
    one placeholder per image)."""
    return "medias" in inspect.signature(processor.__call__).parameters


def kimi_k25_vl_collate_fn(
    examples: list, processor: Any, max_length: int | None = None, **options: Any
) -> Batch:
    """Batch for Kimi K2.5 with every image placeholder expanded to
    ``t * (h / 2) * (w / 2)`` tokens: ``input_ids``, ``attention_mask``, ``labels``
    (built on the expanded ids), ``n_images_per_sample`` ``(B,)``, and, when the
    batch holds images, ``pixel_values``, ``grid_thws`` ``(N, 3)`` and
    ``image_grid_hws`` ``(N, 2)`` (plus ``image_grid_thw`` from the native processor).

    Works with the original remote-code processor (``medias=``, one placeholder per
    image, ``grid_thws``: expanded here by the engine) and with transformers'
    ``Kimi_K25Processor`` (already expanded, checked against ``image_grid_thw``).
    With ``max_length`` every batch is returned with exactly that many columns
    (``pad_to_max_length`` defaults to True here); an over-long sample follows
    ``on_overflow`` and images are never cut.
    """
    if max_length is not None:
        options.setdefault("pad_to_max_length", True)
    opts = seed_options(max_length=max_length, **options)
    mid = media_token_id(processor)
    kernel = _merge_kernel(processor)
    pad_id = pad_token_id(tokenizer_of(processor))
    remote = _takes_medias(processor)

    def by_sample(texts: list[str], images: list[list[Any]]) -> dict:
        rows, pixels, grids = [], [], []
        for text, sample in zip(texts, images):
            medias = [{"type": "image", "image": x} for x in sample]
            out = processor(
                text=text, medias=medias or None, add_special_tokens=False, return_tensors="pt"
            )
            rows.append(as_int64(out["input_ids"]).reshape(-1))
            if sample:
                pixels.append(out["pixel_values"])
                grids.append(out["grid_thws"])
        ids, mask = engine.pad_rows(*ragged(rows), pad_id, "right")
        if not grids:
            return {"input_ids": ids, "attention_mask": mask}
        grid = torch.cat(grids)
        ids, mask = expand_image_tokens(ids, mask, grid, mid, kernel, pad_id)
        return {
            "input_ids": ids,
            "attention_mask": mask,
            "pixel_values": torch.cat(pixels),
            "grid_thws": grid,
        }

    def batched(texts: list[str], images: list[list[Any]]) -> dict:
        flat = flattened(images)
        kwargs: dict[str, Any] = {"images": flat} if flat else {}
        return dict(
            processor(
                text=texts,
                padding=True,
                padding_side="right",
                add_special_tokens=False,
                return_tensors="pt",
                **kwargs,
            )
        )

    def encode(batch: list, conversations: list, indices: list[int]) -> dict:
        texts = rendered_texts(processor, conversations)
        placeholder = tokenizer_of(processor).convert_ids_to_tokens(mid)
        images = media_per_sample(
            "image", texts, conversations, indices, placeholder, opts.base_dir
        )
        per_row = [len(x) for x in images]
        encoded = (by_sample if remote else batched)(texts, images)
        grid = encoded.get("grid_thws", encoded.get("image_grid_thw"))
        if grid is not None:
            grid = torch.as_tensor(grid)
            check_expanded_media(encoded["input_ids"], mid, grid, per_row, indices, kernel)
            encoded["grid_thws"] = grid
            encoded["image_grid_hws"] = grid[:, 1:]
        encoded["n_images_per_sample"] = torch.tensor(per_row, dtype=torch.long)
        return encoded

    return collate_with(
        examples,
        processor,
        encode,
        opts,
        media_ids=[mid],
    )
