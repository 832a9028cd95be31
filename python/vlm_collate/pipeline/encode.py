"""The one encode step every family shares: render, collect and load media, one processor
call, check media counts, report. A family passes :class:`Quirks` for what it does
differently; everything about the processor comes from its profile."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import MediaError
from ..formats.conversation import Conversation
from ..options import CollateOptions
from ..processor.media_tokens import budget_kwargs, pixel_budget
from ..processor.profile import MEDIA_OWNERS, ProcessorProfile, profile_of
from ..processor.render import renderer_for
from ..report import Batch
from .decode import loaded_batch
from .expand import check_expanded_media
from .media import (
    SampleMedia,
    check_placeholder_counts,
    load_image,
    load_video,
    media_access,
    media_counts,
    media_of,
    waveform_at,
)
from .policies import SHRUNK_KEY, budgeted_images
from .run import Encoder, collate_with

KINDS = ("image", "video", "audio")


@dataclass
class Collected:
    """One encode call's inputs after rendering and loading: the examples, their
    conversations and input indices, the rendered texts and each sample's media."""

    examples: list[Any]
    conversations: list[Conversation]
    indices: list[int]
    texts: list[str]
    media: list[SampleMedia]
    budget: tuple[int, int] | None = None
    """The images' call-wide pixel budget (see :func:`.policies.budgeted_images`)."""

    def per_sample(self, kind: str) -> list[list[Any]]:
        """Each sample's loaded ``kind`` items."""
        return [getattr(m, kind + "s") for m in self.media]

    def counts(self, kind: str) -> list[int]:
        """Each sample's number of ``kind`` items."""
        return [len(x) for x in self.per_sample(kind)]


SampleLoader = Callable[[Any, Conversation, int, ProcessorProfile, Any], SampleMedia]


@dataclass(frozen=True)
class Quirks:
    """What a family does differently in the encode step; every field is optional.

    ``render``: texts from conversations instead of the chat template; ``texts``: the
    rendered texts rewritten; ``load``: one sample's media instead of its conversation's
    items; ``inputs``: processor inputs that replace the default ones; ``call``: the
    processor call itself; ``finish``: the encoded batch completed in place (after the
    checks); ``processor_kwargs``/``template_kwargs``: passed to the processor call and
    the template; ``counts``: report ``n_{kind}_per_sample``; ``pixel_dtype``: cast
    ``pixel_values`` to it."""

    render: Callable[[list[Conversation]], list[str]] | None = None
    texts: Callable[[list[str]], list[str]] | None = None
    load: SampleLoader | None = None
    inputs: Callable[[Collected], dict[str, Any]] | None = None
    call: Callable[[ProcessorProfile, Collected], Mapping[str, Any] | None] | None = None
    finish: Callable[[dict[str, Any], Collected], None] | None = None
    processor_kwargs: Mapping[str, Any] = field(default_factory=dict)
    template_kwargs: Mapping[str, Any] = field(default_factory=dict)
    counts: bool = False
    pixel_dtype: torch.dtype | None = None


def loaded_media(
    example: Any, conversation: Conversation, index: int, profile: ProcessorProfile, base_dir: Any
) -> SampleMedia:
    """The media items of a sample's conversation, loaded (RGB images within the
    processor's limits, videos, waveforms at its sampling rate); a kind the processor
    cannot take is a :class:`MediaError` naming the sample and item."""
    raw = media_of(conversation, index)
    for kind in KINDS:
        if getattr(raw, kind + "s") and not profile.takes(kind):
            raise MediaError(
                f"sample {index}, {kind} 0: {profile.processor_class} takes no {kind}s (it has "
                f"no {MEDIA_OWNERS[kind][0]}); pass the model's processor (AutoProcessor) or "
                f"drop the {kind}"
            )
    images = []
    for k, value in enumerate(raw.images):
        where = f"sample {index}, image {k}"
        images.append(load_image(value, where, base_dir, profile.image_limits))
    videos = [
        load_video(v, f"sample {index}, video {k}", base_dir) for k, v in enumerate(raw.videos)
    ]
    audios = [
        waveform_at(
            v,
            profile.sampling_rate,
            f"sample {index}, audio {k}",
            base_dir,
            profile.min_audio_samples,
        )  # fmt: skip
        for k, v in enumerate(raw.audios)
    ]
    return SampleMedia(images, videos, audios)


def processor_inputs(collected: Collected) -> dict[str, Any]:
    """The processor's inputs: texts, images and videos nested per sample (as
    ``apply_chat_template`` passes them), audio flat in batch order."""
    inputs: dict[str, Any] = {"text": collected.texts}
    for kind, key in (("image", "images"), ("video", "videos")):
        if any(collected.counts(kind)):
            inputs[key] = collected.per_sample(kind)
    audios = [a for sample in collected.per_sample("audio") for a in sample]
    if audios:
        inputs["audio"] = audios
    return inputs


def check_placeholders(profile: ProcessorProfile, collected: Collected) -> None:
    """Each rendered text holds one placeholder per media item of its sample, for each
    kind whose placeholder is a token; a mismatch names the sample."""
    for kind, media in profile.media.items():
        if media.placeholder_id is not None:
            counts = collected.counts(kind)
            check_placeholder_counts(
                collected.texts, media.placeholder, counts, kind, collected.indices
            )


def processor_call(profile: ProcessorProfile, inputs: Mapping[str, Any], **kwargs: Any) -> dict:
    """The processor called on ``inputs`` as the collate functions call it: right padding,
    no added special tokens (the template wrote them), torch tensors."""
    return dict(
        profile.processor(
            **inputs,
            padding=True,
            padding_side="right",
            add_special_tokens=False,
            return_tensors="pt",
            **kwargs,
        )
    )


def encoder(
    profile: ProcessorProfile, options: CollateOptions, quirks: Quirks = Quirks()
) -> Encoder:
    """The encode step for the processor of ``profile`` with a family's ``quirks``."""
    render = quirks.render
    if render is None:
        renderer = renderer_for(profile, quirks.template_kwargs or None)

        def render(conversations: list[Conversation]) -> list[str]:
            return [renderer(c) for c in conversations]

    load = quirks.load or loaded_media
    access = media_access(options.base_dir, options.allow_absolute_paths)
    pixel_budget(profile, options.min_pixels, options.max_pixels)  # refused early if unusable

    def encode(examples: list, conversations: list, indices: list[int]) -> dict[str, Any]:
        texts = render(conversations)
        if quirks.texts is not None:
            texts = quirks.texts(texts)
        media = loaded_batch(load, examples, conversations, indices, profile, access)
        collected = Collected(list(examples), list(conversations), list(indices), texts, media)
        check_placeholders(profile, collected)
        shrunk: list = []
        if "image" in profile.media and any(collected.counts("image")):
            collected.budget, shrunk = budgeted_images(
                profile, options, examples, conversations, indices, texts,
                collected.per_sample("image"),
            )  # fmt: skip
        called = quirks.call(profile, collected) if quirks.call is not None else None
        if called is not None:
            encoded = dict(called)
        else:
            inputs = processor_inputs(collected)
            if quirks.inputs is not None:
                inputs.update(quirks.inputs(collected))
            budget = budget_kwargs(collected.budget)
            encoded = processor_call(profile, inputs, **quirks.processor_kwargs, **budget)
        counts = {kind: collected.counts(kind) for kind in profile.media}
        check_expanded_media(profile, encoded, counts, collected.indices)
        pixels = encoded.get("pixel_values")
        if quirks.pixel_dtype is not None and isinstance(pixels, torch.Tensor):
            encoded["pixel_values"] = pixels.to(quirks.pixel_dtype)
        if quirks.counts:
            encoded.update(media_counts(**{k + "s": collected.counts(k) for k in KINDS}))
        if quirks.finish is not None:
            quirks.finish(encoded, collected)
        if shrunk:
            encoded[SHRUNK_KEY] = shrunk  # taken out into the batch report
        return encoded

    return encode


def collate(
    examples: Sequence[Any],
    processor: Any,
    options: CollateOptions,
    quirks: Quirks = Quirks(),
    **pipeline: Any,
) -> Batch:
    """The shared pipeline (:func:`.run.collate_with`) on the shared encode step, with
    ``processor``'s profile resolved once."""
    profile = profile_of(processor)
    return collate_with(examples, profile, encoder(profile, options, quirks), options, **pipeline)
