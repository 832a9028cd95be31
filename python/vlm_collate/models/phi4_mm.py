"""Phi-4-multimodal: audio from ``example["audio"]`` (and images) through transformers'
native ``Phi4MultimodalProcessor``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..conversation import rendered_texts
from ..media import (
    check_placeholder_counts,
    flattened,
    image_limits,
    media_counts,
    media_of,
    media_per_sample,
    min_audio_samples,
    sampling_rate_of,
    waveform_at,
)
from ..options import seed_options
from ..pipeline import collate_with
from ..report import Batch

# Placeholders of the original remote-code processor, written into dataset texts.
_REMOTE_PLACEHOLDER = re.compile(r"<\|(audio|image)_\d+\|>")


def _audio_values(example: Mapping[str, Any], conversation: list[dict], index: int) -> list[Any]:
    """The sample's audio: ``example["audio"]`` (one audio or a list of them), else the
    data of the conversation's audio items."""
    given = example.get("audio")
    if given is None:
        return media_of(conversation, index, ("audio",)).audios
    if isinstance(given, list) and given and not np.isscalar(given[0]):
        return list(given)
    return [given]


def phi4_mm_collate_fn(
    examples: list, processor: Any, max_length: int | None = None, **options: Any
) -> Batch:
    """Batch for Phi-4-multimodal: ``input_ids``, ``attention_mask``, ``labels`` (shifted
    like every other function), ``audio_input_features``/``audio_embed_sizes``
    (``audio_attention_mask`` for several audios) when the batch holds audio,
    ``image_pixel_values``/``image_sizes``/``image_attention_mask`` when it holds
    images, and ``n_audios_per_sample``/``n_images_per_sample`` ``(B,)``.

    Audio comes from ``example["audio"]`` (``{"array", "sampling_rate"}``, an
    ``(array, rate)`` pair, or a list of them) placed at the conversation's
    ``{"type": "audio"}`` items or at the remote processor's ``<|audio_1|>`` text
    placeholders. ``max_length`` has no default cut; an over-long sample follows
    ``on_overflow``, and truncation never cuts audio or image tokens.
    """
    opts = seed_options(max_length=max_length, **options)
    audio_token, image_token = processor.audio_token, processor.image_token
    rate = sampling_rate_of(processor)
    min_samples = min_audio_samples(processor)
    limits = image_limits(processor)

    def native(match: re.Match) -> str:
        return audio_token if match.group(1) == "audio" else image_token

    def encode(batch: list, conversations: list, indices: list[int]) -> dict:
        texts = [
            _REMOTE_PLACEHOLDER.sub(native, t) for t in rendered_texts(processor, conversations)
        ]
        audios = [
            [
                waveform_at(v, rate, f"sample {i}, audio {k}", opts.base_dir, min_samples)
                for k, v in enumerate(_audio_values(e, c, i))
            ]
            for e, c, i in zip(batch, conversations, indices)
        ]
        images = media_per_sample(
            "image", texts, conversations, indices, image_token, opts.base_dir, limits
        )
        check_placeholder_counts(texts, audio_token, [len(a) for a in audios], "audio", indices)
        kwargs: dict[str, Any] = {
            "text": texts,
            "padding": True,
            "padding_side": "right",
            "return_tensors": "pt",
        }
        flat_audios, flat_images = flattened(audios), flattened(images)
        if flat_audios:
            kwargs["audio"] = flat_audios
            kwargs["sampling_rate"] = rate
        if flat_images:
            kwargs["images"] = flat_images
        encoded = dict(processor(**kwargs))
        encoded.update(
            media_counts(audios=[len(a) for a in audios], images=[len(x) for x in images])
        )
        return encoded

    return collate_with(examples, processor, encode, opts)
