"""Qwen2.5-VL (and Qwen2-VL): images and videos through the processor."""

from __future__ import annotations

from typing import Any

from ..conversation import with_list_content
from ..expand import check_expanded_media
from ..media import check_placeholder_counts, images_of, videos_of
from ..pipeline import CollateOptions, collate_with
from ..report import Batch


def _placeholder(processor: Any, attribute: str, default: str) -> str:
    return getattr(processor, attribute, None) or default


def qwen2_5_collate_fn(examples: list, processor: Any, **options: Any) -> Batch:
    """Batch for Qwen2.5-VL: ``input_ids``, ``attention_mask``, ``labels``, and
    ``pixel_values``/``image_grid_thw`` and ``pixel_values_videos``/``video_grid_thw``
    when the batch holds images or videos. A text-only sample may sit in a batch
    with images. Options: see :class:`~vlm_collate.pipeline.CollateOptions`."""
    image_token = _placeholder(processor, "image_token", "<|image_pad|>")
    video_token = _placeholder(processor, "video_token", "<|video_pad|>")

    def encode(batch: list, conversations: list, indices: list[int]) -> dict:
        texts = [
            processor.apply_chat_template(with_list_content(c), tokenize=False)
            for c in conversations
        ]
        images = [images_of(c, i) for c, i in zip(conversations, indices)]
        videos = [videos_of(c, i) for c, i in zip(conversations, indices)]
        check_placeholder_counts(texts, image_token, [len(x) for x in images], "image", indices)
        check_placeholder_counts(texts, video_token, [len(x) for x in videos], "video", indices)
        flat_images = [x for sample in images for x in sample]
        flat_videos = [x for sample in videos for x in sample]
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

    return collate_with(examples, processor, encode, CollateOptions(**options))
