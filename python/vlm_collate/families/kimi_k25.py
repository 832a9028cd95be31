"""Kimi K2.5: image placeholders expanded to their token counts before the model runs,
so sequence length is fixed (pipeline parallelism)."""

from __future__ import annotations

import inspect
from typing import Any

import torch

from .. import engine
from ..engine import as_int64, ragged
from ..options import seed_options
from ..pipeline.encode import Collected, Quirks, collate
from ..pipeline.expand import expand_image_tokens
from ..processor.family import family
from ..processor.profile import ProcessorProfile, profile_of
from ..processor.tokens import token_id
from ..report import Batch


def media_token_id(processor: Any) -> int:
    """Id of the image placeholder (the profile's, checked against the unknown id); a
    processor whose vocabulary lacks ``<|media_pad|>`` is a clear error."""
    profile = profile_of(processor)
    image = profile.media.get("image")
    if image is not None and image.placeholder_id is not None:
        return image.placeholder_id
    placeholder = image.placeholder if image is not None else "<|media_pad|>"
    return token_id(profile.tokenizer, placeholder, what="image placeholder token")


def _takes_medias(processor: Any) -> bool:
    """Whether the processor is the original remote-code one (``medias=`` argument,
    one placeholder per image)."""
    return "medias" in inspect.signature(processor.__call__).parameters


def _pre_expanded(profile: ProcessorProfile, collected: Collected) -> dict[str, Any]:
    """The remote-code processor called per sample (it takes one text), its rows
    padded and each placeholder expanded by the engine to its grid's token count."""
    processor = profile.processor
    rows: list[Any] = []
    pixels, grids = [], []
    for text, sample in zip(collected.texts, collected.per_sample("image")):
        medias = [{"type": "image", "image": x} for x in sample]
        out = processor(
            text=text, medias=medias or None, add_special_tokens=False, return_tensors="pt"
        )
        rows.append(as_int64(out["input_ids"]).reshape(-1))
        if sample:
            pixels.append(out["pixel_values"])
            grids.append(out["grid_thws"])
    padded = engine.pad_rows(*ragged(rows), profile.require_pad_id(), "right")
    if not grids:
        return {"input_ids": padded[0], "attention_mask": padded[1]}
    grid = torch.cat(grids)
    ids, mask = expand_image_tokens(
        *padded, grid, media_token_id(processor), profile.merge_kernel or (2, 2),
        profile.require_pad_id(),
    )  # fmt: skip
    return {"input_ids": ids, "attention_mask": mask, "pixel_values": torch.cat(pixels),
            "grid_thws": grid}  # fmt: skip


def _grid_keys(encoded: dict[str, Any], collected: Collected) -> None:
    """``grid_thws`` (N, 3) and ``image_grid_hws`` (N, 2) from either processor's grid,
    and ``n_images_per_sample`` even for a text-only batch."""
    grid = encoded.get("grid_thws", encoded.get("image_grid_thw"))
    if grid is not None:
        encoded["grid_thws"] = torch.as_tensor(grid)
        encoded["image_grid_hws"] = encoded["grid_thws"][:, 1:]
    encoded["n_images_per_sample"] = torch.tensor(collected.counts("image"), dtype=torch.long)


@family(
    "kimi_k25",
    classes=("KimiK25Processor", "Kimi_K25Processor"),
    model_types=("kimi_k25",),
)
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
    media_token_id(processor)  # a vocabulary without the placeholder fails before any work
    call = _pre_expanded if _takes_medias(processor) else None
    return collate(examples, processor, opts, Quirks(call=call, finish=_grid_keys))
