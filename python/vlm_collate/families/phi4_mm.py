"""Phi-4-multimodal: audio from ``example["audio"]`` (and images) through transformers'
native ``Phi4MultimodalProcessor``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..formats.conversation import Conversation
from ..options import seed_options
from ..pipeline.encode import Quirks, collate, loaded_media
from ..pipeline.media import SampleMedia, waveform_at
from ..processor.family import family
from ..processor.profile import ProcessorProfile, profile_of
from ..report import Batch

# Placeholders of the original remote-code processor, written into dataset texts.
_REMOTE_PLACEHOLDER = re.compile(r"<\|(audio|image)_\d+\|>")


def _with_example_audio(
    example: Any, conversation: Conversation, index: int, profile: ProcessorProfile, base_dir: Any
) -> SampleMedia:
    """The sample's media, its audio taken from ``example["audio"]`` (one audio or a list
    of them) when given, else from the conversation's audio items."""
    given = example.get("audio") if isinstance(example, Mapping) else None
    if given is None:
        return loaded_media(example, conversation, index, profile, base_dir)
    bare = [
        {**m, "content": [i for i in m["content"] if i.get("type") != "audio"]}
        if isinstance(m.get("content"), list)
        else m
        for m in conversation
    ]
    media = loaded_media(example, bare, index, profile, base_dir)
    several = isinstance(given, list) and given and not np.isscalar(given[0])
    values = list(given) if several else [given]
    media.audios = [
        waveform_at(v, profile.sampling_rate, f"sample {index}, audio {k}", base_dir,
                    profile.min_audio_samples)
        for k, v in enumerate(values)
    ]  # fmt: skip
    return media


@family("phi4_mm", classes=("Phi4MultimodalProcessor",), model_types=("phi4_multimodal",))
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
    media = profile_of(processor).media
    native = {kind: media[kind].placeholder for kind in ("audio", "image") if kind in media}

    def native_placeholders(texts: list[str]) -> list[str]:
        return [_REMOTE_PLACEHOLDER.sub(lambda m: native[m.group(1)], t) for t in texts]

    quirks = Quirks(texts=native_placeholders, load=_with_example_audio, counts=True)
    return collate(examples, processor, opts, quirks)
