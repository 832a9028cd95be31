"""Qwen3-Omni: audio, images and video through the shared step; a video's audio track
interleaved with its frames on request (``use_audio_in_video``)."""

from __future__ import annotations

from typing import Any

from ..errors import SampleError
from ..formats.conversation import with_list_content
from ..options import flag_option, seed_options
from ..pipeline.encode import Collected, Quirks, collate
from ..pipeline.media import waveform_at
from ..processor.family import family
from ..processor.profile import ProcessorProfile, profile_of
from ..report import Batch


def _audio_with_video_tracks(
    profile: ProcessorProfile, collected: Collected, base_dir: Any
) -> dict:
    """``audio`` in conversation order, each video's track after its standalone
    neighbours, and ``audio_from_video_indices``: per audio the batch index of its video
    (``None`` for a standalone audio item)."""
    audios: list[Any] = []
    sources: list[int | None] = []
    first_video = 0
    samples = zip(collected.conversations, collected.indices, collected.media)
    for conversation, index, media in samples:
        standalone = iter(media.audios)
        video_k = 0
        for message in with_list_content(conversation):
            for item in message["content"]:
                if item.get("type") == "audio":
                    audios.append(next(standalone))
                    sources.append(None)
                elif item.get("type") == "video":
                    if item.get("audio") is None:
                        raise SampleError(
                            f"sample {index}, video {video_k}: use_audio_in_video=True needs "
                            "the video's audio track as the item's 'audio' ({'array', "
                            "'sampling_rate'}); decode it when building the dataset, or pass "
                            "use_audio_in_video=False"
                        )
                    where = f"sample {index}, audio of video {video_k}"
                    audios.append(
                        waveform_at(item["audio"], profile.sampling_rate, where, base_dir,
                                    profile.min_audio_samples)
                    )  # fmt: skip
                    sources.append(first_video + video_k)
                    video_k += 1
        first_video += video_k
    return {"audio": audios, "audio_from_video_indices": sources} if first_video else {}


@family(
    "qwen3_omni",
    classes=("Qwen3OmniMoeProcessor",),
    model_types=("qwen3_omni_moe",),
    rope={
        "Qwen3OmniMoeProcessor": "qwen3_omni",
        "qwen3_omni_moe": "qwen3_omni",
        "qwen3_omni_moe_thinker": "qwen3_omni",
    },
)
def qwen3_omni_collate_fn(
    examples: list, processor: Any, use_audio_in_video: bool = False, **options: Any
) -> Batch:
    """Batch for Qwen3-Omni: ``input_ids``, ``attention_mask``, ``labels``, and the
    processor's media tensors when present (``pixel_values``/``image_grid_thw``,
    ``pixel_values_videos``/``video_grid_thw``/``video_second_per_grid``,
    ``input_features``/``feature_attention_mask``), plus ``n_images_per_sample`` /
    ``n_videos_per_sample`` / ``n_audios_per_sample`` ``(B,)`` for the kinds present
    (standalone audio items only).

    Audio items carry a waveform (``{"array", "sampling_rate"}``). With
    ``use_audio_in_video=True`` each video item carries its audio track under
    ``"audio"`` and the processor interleaves it with the video tokens. Padding is
    pinned to the right (the processor pads left by default). Options: see
    :class:`~vlm_collate.CollateOptions`.
    """
    opts = seed_options(extra_names=("use_audio_in_video",), **options)
    use_audio_in_video = flag_option("use_audio_in_video", use_audio_in_video)
    # transformers >= 5.24 names the flag load_audio_from_video; older releases use_audio_in_video.
    flag = (
        "load_audio_from_video"
        if hasattr(processor, "load_audio_from_video")
        else "use_audio_in_video"
    )
    # Released templates that read the flag get it; any other keyword would reach the processor.
    template = profile_of(processor).template_key
    template_kwargs = (
        {"use_audio_in_video": use_audio_in_video} if "use_audio_in_video" in template else {}
    )

    def inputs(collected: Collected) -> dict[str, Any]:
        if not use_audio_in_video:
            return {}
        return _audio_with_video_tracks(profile_of(processor), collected, opts.base_dir)

    quirks = Quirks(
        inputs=inputs,
        processor_kwargs={flag: use_audio_in_video},
        template_kwargs=template_kwargs,
        counts=True,
    )
    return collate(examples, processor, opts, quirks)
