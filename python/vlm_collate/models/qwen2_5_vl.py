"""Qwen2.5-VL (and Qwen2-VL): images and videos through the processor."""

from __future__ import annotations

from typing import Any

from ..conversation import rendered_texts
from ..expand import check_expanded_media
from ..media import flattened, image_limits, media_per_sample
from ..options import seed_options
from ..pipeline import collate_with
from ..report import Batch


def _placeholder(processor: Any, attribute: str, default: str) -> str:
    return getattr(processor, attribute, None) or default


def qwen2_5_collate_fn(examples: list, processor: Any, **options: Any) -> Batch:
    """Batch for Qwen2.5-VL: ``input_ids``, ``attention_mask``, ``labels``, and
    ``pixel_values``/``image_grid_thw`` and ``pixel_values_videos``/``video_grid_thw``
    when the batch holds images or videos. A text-only sample may sit in a batch
    with images. Options: see :class:`~vlm_collate.CollateOptions` (pre-shifted
    labels plus ``shift_labels`` by default, as the seed; ``shift=False`` for
    Hugging Face style)."""
    opts = seed_options(**options)
    image_token = _placeholder(processor, "image_token", "<|image_pad|>")
    media = (opts.base_dir, image_limits(processor))
    video_token = _placeholder(processor, "video_token", "<|video_pad|>")

    def encode(batch: list, conversations: list, indices: list[int]) -> dict:
        texts = rendered_texts(processor, conversations)
        images = media_per_sample("image", texts, conversations, indices, image_token, *media)
        videos = media_per_sample("video", texts, conversations, indices, video_token, *media)
        flat_images, flat_videos = flattened(images), flattened(videos)
        encoded = processor(
            text=texts,
            images=flat_images or None,
            videos=flat_videos or None,
            padding=True,
            padding_side="right",
            return_tensors="pt",
        )
        merge = getattr(processor.image_processor, "merge_size", 2)
        for kind, token, items, grid in (
            ("image", image_token, images, "image_grid_thw"),
            ("video", video_token, videos, "video_grid_thw"),
        ):
            check_expanded_media(
                encoded["input_ids"],
                processor.tokenizer.convert_tokens_to_ids(token),
                encoded.get(grid),
                [len(x) for x in items],
                indices,
                (merge, merge),
                kind,
            )
        return encoded

    return collate_with(examples, processor, encode, opts)
