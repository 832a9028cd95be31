"""The one encode step every family shares: render, collect and load media, one processor
call, check media counts, report. A family passes :class:`Quirks` for what it does
differently; everything about the processor comes from its profile."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import MediaError, OptionError, SampleError
from ..formats.content import media_columns
from ..formats.conversation import Conversation
from ..options import CollateOptions, positive_fps
from ..processor.media_tokens import (
    budget_kwargs,
    pixel_budget,
    sampled_frames,
    video_metadata,
)
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
    video_metadata: list[list[dict[str, Any]]] | None = None
    """Each sample's videos' metadata (``VideoMetadata``'s names) where an ``fps`` budget
    applied in the batch (see :func:`fps_budgets`), else None."""

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


def unplaced_columns(example: Any, conversation: Conversation, index: int) -> None:
    """Refuses a row whose audio column the formats left unplaced (no ``{"type": "audio"}``
    item and no ``<audio>`` tag in its messages): only a family that reads the column
    itself (Phi-4-multimodal, through its own loader) takes such a row."""
    if not isinstance(example, Mapping):
        return
    for kind, (column, values) in media_columns(example, index).items():
        if kind != "audio" or any(
            isinstance(m.get("content"), list)
            and any(isinstance(i, Mapping) and i.get("type") == kind for i in m["content"])
            for m in conversation
        ):
            continue
        raise SampleError(
            f"sample {index}: its {column!r} column holds {len(values)} {kind}(s) but its "
            f"messages have no {{'type': '{kind}'}} item and no <{kind}> tag; put one per "
            f"{kind}, in order, where it belongs in the message content"
        )


def _placed_media(
    example: Any, conversation: Conversation, index: int, profile: ProcessorProfile, base_dir: Any
) -> SampleMedia:
    unplaced_columns(example, conversation, index)
    return loaded_media(example, conversation, index, profile, base_dir)


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


def video_items(conversation: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The video items of a conversation in order (the order of ``media_of``'s videos)."""
    items = []
    for message in conversation:
        content = message.get("content")
        if isinstance(content, (list, tuple)):
            items.extend(i for i in content if isinstance(i, Mapping) and i.get("type") == "video")
    return items


def _frames_value(source: Any, where: str) -> int | None:
    value = source.get("max_frames") if isinstance(source, Mapping) else None
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise SampleError(f"{where}: max_frames must be a positive integer, got {value!r}")
    return int(value)


def frame_budgets(
    options: CollateOptions, example: Any, conversation: Sequence[Mapping[str, Any]], index: int
) -> list[int | None]:
    """Each video's ``max_frames`` in sample ``index``: a video item's over its row's over
    the options'; None where none names one."""
    row = _frames_value(example, f"sample {index}")
    return [
        next(
            (v for v in (_frames_value(item, f"sample {index}, video {k}"), row) if v is not None),
            getattr(options, "max_frames", None),
        )
        for k, item in enumerate(video_items(conversation))
    ]


FpsBudget = tuple[float | None, float | None]
"""``(fps, source_fps)`` of one video: its fps budget and its own frame rate."""


def _fps_value(source: Any, key: str, where: str) -> float | None:
    value = source.get(key) if isinstance(source, Mapping) else None
    return None if value is None else positive_fps(f"{where}: {key}", value, SampleError)


def source_rate(item: Any, where: str) -> float | None:
    """A video item's own frame rate: its ``video_fps``, or its ``metadata``'s ``fps``
    (``VideoMetadata``'s and qwen-vl-utils' names), or ``total_num_frames / duration``
    of that metadata; None where it gives none."""
    rate = _fps_value(item, "video_fps", where)
    metadata = item.get("metadata") if isinstance(item, Mapping) else None
    if rate is not None or metadata is None:
        return rate
    if not isinstance(metadata, Mapping):
        raise SampleError(
            f"{where}: metadata must be a mapping such as {{'fps': 30.0, 'total_num_frames': "
            f"300}}, got {type(metadata).__name__}"
        )
    rate = _fps_value(metadata, "fps", f"{where}, metadata")
    if rate is None and metadata.get("duration") is not None:
        total = metadata.get("total_num_frames")
        duration = _fps_value(metadata, "duration", f"{where}, metadata")
        if isinstance(total, (int, np.integer)) and not isinstance(total, bool) and total > 0:
            rate = float(total) / float(duration)  # type: ignore[arg-type]
    return rate


def fps_budgets(
    options: CollateOptions, example: Any, conversation: Sequence[Mapping[str, Any]], index: int
) -> list[FpsBudget]:
    """Each video's ``(fps, source_fps)`` in sample ``index``: its fps budget (a video
    item's ``fps`` over its row's over the options'; None where none names one) and its
    own rate (:func:`source_rate`). A video under an fps budget whose own rate is unknown
    is a SampleError: the budget is never ignored."""
    row = _fps_value(example, "fps", f"sample {index}")
    out: list[FpsBudget] = []
    for k, item in enumerate(video_items(conversation)):
        where = f"sample {index}, video {k}"
        fps = next(
            (v for v in (_fps_value(item, "fps", where), row) if v is not None),
            getattr(options, "fps", None),
        )
        rate = source_rate(item, where)
        if fps is not None and rate is None:
            raise SampleError(
                f"{where}: fps={fps} samples frames by time, but this video's source frame "
                "rate is unknown; give the video item's video_fps (e.g. {'type': 'video', "
                "'video': frames, 'video_fps': 30.0}) or metadata={'fps': ...}, or drop fps"
            )
        out.append((fps, rate))
    return out


def frames_count(video: Any) -> int | None:
    """The frame count of a loaded video given as frames (None for a path)."""
    if isinstance(video, (list, tuple)) or hasattr(video, "shape"):
        return len(video)
    return None


def sampled_videos(
    profile: ProcessorProfile,
    videos: list[Any],
    budgets: Sequence[int | None],
    index: int,
    rates: Sequence[FpsBudget] | None = None,
) -> tuple[list[Any], list[dict[str, Any] | None]]:
    """``videos`` (loaded: frame arrays or lists, or paths) with each one's frames sampled
    under its ``max_frames`` and ``fps`` (``rates``, from :func:`fps_budgets`;
    :func:`~vlm_collate.processor.media_tokens.sampled_frames`: the video processor's own
    sampling), and each one's metadata where an fps budget applied (else None); a path
    under a budget is a MediaError (the processor decodes it; give frames)."""
    out, metadata = [], []
    rates = rates or [(None, None)] * len(videos)
    for k, (video, budget, (fps, rate)) in enumerate(zip(videos, budgets, rates)):
        total = frames_count(video)
        where = f"sample {index}, video {k}"
        if (budget is not None or fps is not None) and total is None:
            named = f"max_frames={budget}" if budget is not None else f"fps={fps}"
            raise MediaError(
                f"{where}: {named} applies to videos given as frames (an array or a list "
                "of images); this one is a path the processor decodes: decode it to "
                "frames, or drop the budget"
            )
        kept = None
        if budget is not None or fps is not None:
            try:
                kept = sampled_frames(profile, total, budget, fps, rate)
            except SampleError as error:  # no rate, or none it can sample: name the video
                raise SampleError(f"{where}: {error}") from None
        metadata.append(video_metadata(total, rate, kept) if fps is not None else None)
        if kept is None:
            out.append(video)
        elif isinstance(video, (list, tuple)):
            out.append([video[i] for i in kept])
        else:
            out.append(video[np.asarray(kept)])
    return out, metadata


def batch_metadata(
    videos: Sequence[Sequence[Any]], metadata: Sequence[Sequence[dict[str, Any] | None]]
) -> list[list[dict[str, Any]]] | None:
    """Each sample's videos' metadata for the processor call where one video of the batch
    has some (the others get the metadata the processor makes itself for frames given
    without it: every frame, no rate), else None."""
    if not any(m is not None for sample in metadata for m in sample):
        return None
    return [
        [
            m
            if m is not None
            else {"total_num_frames": len(v), "fps": None, "frames_indices": list(range(len(v)))}
            for v, m in zip(sample_videos, sample_metadata)
        ]
        for sample_videos, sample_metadata in zip(videos, metadata)
    ]


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

    load = quirks.load or _placed_media
    access = media_access(options.base_dir, options.allow_absolute_paths)
    pixel_budget(profile, options.min_pixels, options.max_pixels)  # refused early if unusable
    for name in ("max_frames", "fps"):
        if getattr(options, name, None) is not None and "video" not in profile.media:
            raise OptionError(
                f"{name}={getattr(options, name)}: {profile.processor_class} takes no videos; "
                f"drop {name}"
            )

    def encode(examples: list, conversations: list, indices: list[int]) -> dict[str, Any]:
        texts = render(conversations)
        if quirks.texts is not None:
            texts = quirks.texts(texts)
        media = loaded_batch(load, examples, conversations, indices, profile, access)
        metadata: list[list[dict[str, Any] | None]] = []
        if "video" in profile.media:  # frame budgets (max_frames, fps), before either path
            for example, conv, index, sample in zip(examples, conversations, indices, media):
                budgets = frame_budgets(options, example, conv, index)
                rates = fps_budgets(options, example, conv, index) if sample.videos else []
                found: list[dict[str, Any] | None] = [None] * len(sample.videos)
                if sample.videos and any(
                    b is not None or r[0] is not None for b, r in zip(budgets, rates)
                ):
                    sample.videos, found = sampled_videos(
                        profile, sample.videos, budgets, index, rates
                    )
                metadata.append(found)
        collected = Collected(list(examples), list(conversations), list(indices), texts, media)
        if metadata:
            collected.video_metadata = batch_metadata(collected.per_sample("video"), metadata)
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
            if collected.video_metadata is not None:  # fps budgets: the processor's metadata
                inputs["video_metadata"] = collected.video_metadata
                inputs["do_sample_frames"] = False  # sampled above, by its own rule
            # The call's own inputs (fps budgets' do_sample_frames=False) win over the
            # family's keywords (GLM-4.1V's do_sample_frames=False): one value per key.
            kwargs = {**quirks.processor_kwargs, **budget}
            encoded = processor_call(
                profile, inputs, **{k: v for k, v in kwargs.items() if k not in inputs}
            )
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
