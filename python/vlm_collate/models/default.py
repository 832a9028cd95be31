"""Any processor with a chat template: ``apply_chat_template(tokenize=True)``."""

from __future__ import annotations

from typing import Any

import torch

from ..conversation import with_list_content
from ..errors import MediaError
from ..media import (
    check_image_limits,
    image_limits,
    item_value,
    load_image,
    load_video,
    min_audio_samples,
    sampling_rate_of,
    waveform_at,
)
from ..options import dtype_option, seed_options
from ..pipeline import collate_with
from ..report import Batch

_MEDIA_OWNERS = {
    "image": ("image_processor",),
    "video": ("video_processor", "image_processor"),
    "audio": ("feature_extractor", "audio_processor"),
}


def _check_takes(processor: Any, kind: str, where: str) -> None:
    """A processor without a ``kind`` processor would render a placeholder and no pixels."""
    if not any(getattr(processor, owner, None) is not None for owner in _MEDIA_OWNERS[kind]):
        raise MediaError(
            f"{where}: {type(processor).__name__} takes no {kind}s (it has no "
            f"{_MEDIA_OWNERS[kind][0]}); pass the model's processor (AutoProcessor) or drop "
            f"the {kind}"
        )


def _with_loaded_media(
    conversation: list[dict], index: int, processor: Any, base_dir: str | None
) -> list[dict]:
    """The conversation with every media item holding its loaded data under its type
    (``{"type": "image", "image": <RGB PIL image>}``), read through :mod:`..media`."""
    rate = sampling_rate_of(processor)
    limits = image_limits(processor)
    counts = dict.fromkeys(_MEDIA_OWNERS, 0)
    out = []
    for turn, message in enumerate(with_list_content(conversation)):
        content = []
        for k, item in enumerate(message["content"]):
            kind = item.get("type")
            if kind in _MEDIA_OWNERS:
                where = f"sample {index}, {kind} {counts[kind]}"
                value = item_value(item, kind)
                if value is None:
                    raise MediaError(
                        f"sample {index}, message {turn}, item {k}: a {kind} item needs its "
                        f"data under '{kind}' (or 'path'/'url')"
                    )
                _check_takes(processor, kind, where)
                if kind == "image":
                    value = load_image(value, where, base_dir)
                    check_image_limits(value, limits, where)
                elif kind == "video":
                    value = load_video(value, where, base_dir)
                else:
                    value = waveform_at(value, rate, where, base_dir, min_audio_samples(processor))
                item = {"type": kind, kind: value}
                counts[kind] += 1
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
        loaded = [
            _with_loaded_media(c, i, processor, opts.base_dir)
            for c, i in zip(conversations, indices)
        ]
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
