"""Kimi-VL: images flattened over the batch, the template's text without added specials."""

from __future__ import annotations

from typing import Any

from ..conversation import rendered_texts
from ..media import flattened, media_counts, media_per_sample
from ..options import seed_options
from ..pipeline import collate_with
from ..report import Batch


def kimi_vl_collate_fn(
    examples: list, processor: Any, max_length: int | None = None, **options: Any
) -> Batch:
    """Batch for Kimi-VL: ``input_ids``, ``attention_mask``, ``labels``, and
    ``pixel_values``/``image_grid_hws`` and ``n_images_per_sample`` ``(B,)`` when the
    batch holds images (flattened over the batch in order).

    The rendered template is tokenized with ``add_special_tokens=False``. With
    ``max_length`` every batch is returned with exactly that many columns
    (``pad_to_max_length`` defaults to True here); an over-long sample follows
    ``on_overflow``. Options: see :class:`~vlm_collate.CollateOptions`.
    """
    if max_length is not None:
        options.setdefault("pad_to_max_length", True)
    opts = seed_options(max_length=max_length, **options)
    placeholder = getattr(processor, "image_token", None) or "<|media_pad|>"

    def encode(batch: list, conversations: list, indices: list[int]) -> dict:
        texts = rendered_texts(processor, conversations)
        images = media_per_sample(
            "image", texts, conversations, indices, placeholder, opts.base_dir
        )
        kwargs: dict[str, Any] = {
            "text": texts,
            "padding": True,
            "padding_side": "right",
            "add_special_tokens": False,
            "return_tensors": "pt",
        }
        flat = flattened(images)
        if flat:
            kwargs["images"] = flat
        encoded = dict(processor(**kwargs))
        encoded.update(media_counts(images=[len(x) for x in images]))
        return encoded

    return collate_with(examples, processor, encode, opts)
