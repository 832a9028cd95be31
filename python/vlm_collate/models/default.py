"""Any processor with a chat template: ``apply_chat_template(tokenize=True)``."""

from __future__ import annotations

from typing import Any

import torch

from ..conversation import with_list_content
from ..media import load_image, media_of
from ..options import dtype_option, seed_options
from ..pipeline import collate_with
from ..report import Batch


def _with_loaded_images(conversation: list[dict], index: int) -> list[dict]:
    """The conversation with every image item holding a loaded RGB PIL image."""
    media_of(conversation, index)  # validates that every media item has data
    out, k = [], 0
    for message in with_list_content(conversation):
        content = []
        for item in message["content"]:
            if item.get("type") == "image":
                value = next(
                    item[key] for key in ("image", "path", "url") if item.get(key) is not None
                )
                item = {"type": "image", "image": load_image(value, f"sample {index}, image {k}")}
                k += 1
            content.append(item)
        out.append({**message, "content": content})
    return out


def default_collate_fn(
    examples: list,
    processor: Any,
    max_length: int | None = None,
    pixel_dtype: torch.dtype | None = torch.bfloat16,
    **options: Any,
) -> Batch:
    """Batch from ``processor.apply_chat_template(..., tokenize=True, return_dict=True)``.

    Text-only batches work; ``pixel_values`` is cast to ``pixel_dtype`` only when
    present. No ``position_ids`` are made up: models with multi-axis rotary
    positions compute their own.
    """
    opts = seed_options(extra_names=("pixel_dtype",), max_length=max_length, **options)
    pixel_dtype = dtype_option("pixel_dtype", pixel_dtype)

    def encode(batch: list, conversations: list, indices: list[int]) -> dict:
        loaded = [_with_loaded_images(c, i) for c, i in zip(conversations, indices)]
        encoded = processor.apply_chat_template(
            loaded,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            padding=True,
            padding_side="right",
            add_generation_prompt=False,
        )
        encoded = dict(encoded)
        if pixel_dtype is not None and isinstance(encoded.get("pixel_values"), torch.Tensor):
            encoded["pixel_values"] = encoded["pixel_values"].to(pixel_dtype)
        return encoded

    return collate_with(examples, processor, encode, opts)
