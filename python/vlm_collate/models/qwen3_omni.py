"""Qwen3-Omni: audio, images and video through the processor, padded on the right."""

from __future__ import annotations

from typing import Any

from ..conversation import rendered_texts, with_list_content
from ..errors import SampleError
from ..media import (
    check_placeholder_counts,
    flattened,
    image_limits,
    item_value,
    media_counts,
    media_per_sample,
    min_audio_samples,
    sampling_rate_of,
    waveform_at,
)
from ..options import flag_option, seed_options
from ..pipeline import collate_with
from ..report import Batch


def _audio_slots(
    conversation: list[dict],
    index: int,
    use_audio_in_video: bool,
    rate: int | None,
    first_video: int,
    load: dict[str, Any],
) -> tuple[list[Any], list[int | None]]:
    """Waveforms of a sample in conversation order, each with the batch index of the
    video it belongs to (``None`` for a standalone audio item)."""
    waveforms: list[Any] = []
    sources: list[int | None] = []
    audio_k = video_k = 0
    for message in with_list_content(conversation):
        for item in message["content"]:
            kind = item.get("type")
            if kind == "audio":
                value = item_value(item, "audio")
                if value is None:
                    raise SampleError(
                        f"sample {index}, audio {audio_k}: an audio item needs its waveform "
                        "under 'audio'"
                    )
                waveforms.append(
                    waveform_at(value, rate, f"sample {index}, audio {audio_k}", **load)
                )
                sources.append(None)
                audio_k += 1
            elif kind == "video":
                if use_audio_in_video:
                    if item.get("audio") is None:
                        raise SampleError(
                            f"sample {index}, video {video_k}: use_audio_in_video=True needs "
                            "the video's audio track as the item's 'audio' ({'array', "
                            "'sampling_rate'}); decode it when building the dataset, or pass "
                            "use_audio_in_video=False"
                        )
                    where = f"sample {index}, audio of video {video_k}"
                    waveforms.append(waveform_at(item["audio"], rate, where, **load))
                    sources.append(first_video + video_k)
                video_k += 1
    return waveforms, sources


def qwen3_omni_collate_fn(
    examples: list, processor: Any, use_audio_in_video: bool = False, **options: Any
) -> Batch:
    """Batch for Qwen3-Omni: ``input_ids``, ``attention_mask``, ``labels``, and the
    processor's media tensors when present (``pixel_values``/``image_grid_thw``,
    ``pixel_values_videos``/``video_grid_thw``/``video_second_per_grid``,
    ``input_features``/``feature_attention_mask``), plus ``n_images_per_sample`` /
    ``n_videos_per_sample`` / ``n_audios_per_sample`` ``(B,)`` for the kinds present.

    Audio items carry a waveform (``{"array", "sampling_rate"}``). With
    ``use_audio_in_video=True`` each video item carries its audio track under
    ``"audio"`` and the processor interleaves it with the video tokens. Padding is
    pinned to the right (the processor pads left by default). Options: see
    :class:`~vlm_collate.CollateOptions`.
    """
    opts = seed_options(extra_names=("use_audio_in_video",), **options)
    use_audio_in_video = flag_option("use_audio_in_video", use_audio_in_video)
    image_token = getattr(processor, "image_token", None) or "<|image_pad|>"
    video_token = getattr(processor, "video_token", None) or "<|video_pad|>"
    audio_token = getattr(processor, "audio_token", None) or "<|audio_pad|>"
    rate = sampling_rate_of(processor)
    media = (opts.base_dir, image_limits(processor))
    audio_load = {"base_dir": opts.base_dir, "min_samples": min_audio_samples(processor)}
    # transformers >= 5.24 names the flag load_audio_from_video; older releases use_audio_in_video.
    flag = (
        "load_audio_from_video"
        if hasattr(processor, "load_audio_from_video")
        else "use_audio_in_video"
    )

    # Released templates that read the flag get it; any other keyword would reach the processor.
    template_kwargs = (
        {"use_audio_in_video": use_audio_in_video}
        if "use_audio_in_video" in str(getattr(processor, "chat_template", None) or "")
        else {}
    )

    def encode(batch: list, conversations: list, indices: list[int]) -> dict:
        texts = rendered_texts(processor, conversations, **template_kwargs)
        images = media_per_sample("image", texts, conversations, indices, image_token, *media)
        videos = media_per_sample("video", texts, conversations, indices, video_token, *media)
        audios: list[Any] = []
        sources: list[int | None] = []
        standalone: list[int] = []
        first_video = 0
        for c, i, sample_videos in zip(conversations, indices, videos):
            waves, src = _audio_slots(c, i, use_audio_in_video, rate, first_video, audio_load)
            first_video += len(sample_videos)
            audios += waves
            sources += src
            standalone.append(src.count(None))
        check_placeholder_counts(texts, audio_token, standalone, "audio", indices)
        kwargs: dict[str, Any] = {
            "text": texts,
            "padding": True,
            "padding_side": "right",
            "return_tensors": "pt",
            flag: use_audio_in_video,
        }
        flat_videos = flattened(videos)
        for key, values in (
            ("images", flattened(images)),
            ("videos", flat_videos),
            ("audio", audios),
        ):
            if values:
                kwargs[key] = values
        if use_audio_in_video and flat_videos:
            kwargs["audio_from_video_indices"] = sources
        encoded = dict(processor(**kwargs))
        encoded.update(
            media_counts(
                images=[len(x) for x in images],
                videos=[len(x) for x in videos],
                audios=standalone,
            )
        )
        return encoded

    return collate_with(examples, processor, encode, opts)
