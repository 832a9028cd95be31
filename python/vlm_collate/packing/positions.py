"""Multimodal rotary positions (mRoPE) of the Qwen families without the model: the
``position_ids`` that transformers' ``get_rope_index`` computes, from token ids, media
grids and a few config values, taken from a model config, a processor or given."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .. import engine
from ..engine import as_int64
from ..errors import OptionError
from ..processor.family import rope_family_of, rope_family_of_model_type, rope_model_types
from ..processor.profile import profile_of

FAMILIES = ("qwen2_vl", "qwen2_5_vl", "qwen3_vl", "qwen3_omni")
"""The families whose rotary positions the engine computes."""


@dataclass(frozen=True)
class RopeConfig:
    """What a family's rotary positions depend on.

    ``tokens_per_second``: Qwen2.5-VL's ``vision_config.tokens_per_second`` or
    Qwen3-Omni's ``position_id_per_seconds`` (how far apart video frames sit, per
    second of video); the other families ignore it. ``audio_*``: Qwen3-Omni only.
    """

    family: str
    spatial_merge_size: int
    image_token_id: int
    video_token_id: int
    vision_start_token_id: int
    tokens_per_second: float = 1.0
    audio_token_id: int | None = None
    audio_start_token_id: int | None = None
    _spec: engine.RopeSpec = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise OptionError(f"family must be one of {FAMILIES}, got {self.family!r}")
        for name in ("spatial_merge_size", "image_token_id", "video_token_id"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
                raise OptionError(f"{name} must be a non-negative integer, got {value!r}")
        if self.spatial_merge_size < 1:
            raise OptionError("spatial_merge_size must be at least 1")
        if self.family == "qwen3_omni" and self.audio_start_token_id is None:
            raise OptionError(
                "Qwen3-Omni positions need audio_token_id and audio_start_token_id "
                "(the processor's audio_token and audio_bos_token)"
            )
        # The engine's config, converted and checked once.
        spec = engine.RopeSpec(
            self.family,
            self.spatial_merge_size,
            self.image_token_id,
            self.video_token_id,
            self.vision_start_token_id,
            self.tokens_per_second,
            self.audio_token_id,
            self.audio_start_token_id,
        )
        object.__setattr__(self, "_spec", spec)

    @classmethod
    def from_model_config(cls, config: Any, **overrides: Any) -> RopeConfig:
        """From a transformers config of a Qwen2-VL, Qwen2.5-VL, Qwen3-VL or Qwen3-Omni
        model (its ``thinker_config`` for Qwen3-Omni); ``overrides`` replace values."""
        family = rope_family_of_model_type(getattr(config, "model_type", None))
        if family is None:
            raise OptionError(
                f"no rotary positions for model type {getattr(config, 'model_type', None)!r}; "
                f"supported: {rope_model_types()}"
            )
        outer = config
        config = getattr(config, "thinker_config", None) or config
        vision = getattr(config, "vision_config", None)
        start = getattr(config, "vision_start_token_id", None)
        if start is None:  # Qwen3-Omni's thinker config names it only on the talker
            start = getattr(getattr(outer, "talker_config", None), "vision_start_token_id", None)
        if family == "qwen3_omni":
            per_second = config.position_id_per_seconds
        else:
            per_second = getattr(vision, "tokens_per_second", None) or 1.0
        values = dict(
            family=family,
            spatial_merge_size=int(getattr(vision, "spatial_merge_size", 2)),
            image_token_id=int(config.image_token_id),
            video_token_id=int(config.video_token_id),
            vision_start_token_id=int(start if start is not None else -1),
            tokens_per_second=float(per_second),
            audio_token_id=getattr(config, "audio_token_id", None),
            audio_start_token_id=getattr(config, "audio_start_token_id", None),
        )
        return cls(**{**values, **overrides})

    @classmethod
    def from_processor(cls, processor: Any, **overrides: Any) -> RopeConfig:
        """From a processor: the merge size of its image processor and the ids of its
        media and delimiter tokens. ``tokens_per_second`` is not a processor value:
        pass the model's, else the family's transformers default is used."""
        family = overrides.pop("family", None) or rope_family_of(processor)
        if family is None:
            raise OptionError(
                f"cannot tell the model family of {type(processor).__name__}; pass family= "
                f"(one of {FAMILIES}) or build RopeConfig.from_model_config(model.config)"
            )
        profile = profile_of(processor)
        image, video = profile.media.get("image"), profile.media.get("video")
        values: dict[str, Any] = dict(
            family=family,
            spatial_merge_size=profile.merge_kernel[0] if profile.merge_kernel else None,
            image_token_id=image.placeholder_id if image is not None else None,
            video_token_id=video.placeholder_id if video is not None else None,
            vision_start_token_id=profile.vision_start_id,
            tokens_per_second=_default_tokens_per_second(family),
        )
        if family == "qwen3_omni":
            audio = profile.media.get("audio")
            values["audio_token_id"] = audio.placeholder_id if audio is not None else None
            values["audio_start_token_id"] = profile.audio_start_id
        missing = [k for k, v in values.items() if v is None]
        if missing:
            raise OptionError(
                f"the processor's tokenizer lacks the tokens for {missing}; pass them as "
                "keyword arguments"
            )
        return cls(**{**values, **overrides})

    def replace(self, **changes: Any) -> RopeConfig:
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)


def _default_tokens_per_second(family: str) -> float:
    """transformers' default for the family (what a config without the value gets)."""
    if family == "qwen2_5_vl":
        from transformers import Qwen2_5_VLConfig

        return float(Qwen2_5_VLConfig().vision_config.tokens_per_second)
    if family == "qwen3_omni":
        from transformers.models.qwen3_omni_moe.configuration_qwen3_omni_moe import (
            Qwen3OmniMoeThinkerConfig,
        )

        return float(Qwen3OmniMoeThinkerConfig().position_id_per_seconds)
    return 1.0


def rope_config(source: Any, **overrides: Any) -> RopeConfig:
    """A :class:`RopeConfig` from a ``RopeConfig``, a model (or its config), or a processor."""
    if isinstance(source, RopeConfig):
        return source.replace(**overrides) if overrides else source
    config = getattr(source, "config", None)
    if hasattr(source, "model_type") and hasattr(source, "to_dict"):
        return RopeConfig.from_model_config(source, **overrides)
    if config is not None and hasattr(config, "model_type") and hasattr(source, "forward"):
        return RopeConfig.from_model_config(config, **overrides)
    return RopeConfig.from_processor(source, **overrides)


def _int64(value: Any, name: str) -> np.ndarray:
    """``value`` as a C-contiguous int64 array: a contiguous int64 CPU tensor is
    viewed without a copy or a check (the common case of a collated batch)."""
    if (
        type(value) is torch.Tensor
        and value.dtype is torch.int64
        and not value.requires_grad
        and value.is_cpu
        and value.is_contiguous()
    ):
        return value.numpy()
    return as_int64(value, name)


def _grids(value: Any, name: str) -> np.ndarray | None:
    if value is None:
        return None
    grids = _int64(value, name)
    if grids.ndim != 2 or grids.shape[1] != 3:
        grids = grids.reshape(-1, 3)
    return grids if len(grids) else None


def _seconds(value: Any) -> list[float]:
    if value is None:
        return []
    if hasattr(value, "detach"):
        value = value.detach().cpu().float().numpy()
    return [float(x) for x in np.asarray(value, dtype=np.float64).reshape(-1)]


def ragged_rope_positions(
    values: np.ndarray,
    offsets: np.ndarray,
    rope: RopeConfig,
    image_grid_thw: Any = None,
    video_grid_thw: Any = None,
    second_per_grid: Any = None,
    use_audio_in_video: bool = False,
) -> np.ndarray:
    """``(3, total)`` positions of the rows ``values[offsets[i]:offsets[i + 1]]`` (token
    ids without padding), each row from 0; grids are taken in row order. int64, or
    float32 for Qwen3-Omni (as its ``get_rope_index`` returns)."""
    return engine.rope_positions(
        as_int64(values, "values"),
        as_int64(offsets, "offsets"),
        rope._spec,
        _grids(image_grid_thw, "image_grid_thw"),
        _grids(video_grid_thw, "video_grid_thw"),
        _seconds(second_per_grid),
        bool(use_audio_in_video),
    )


def rope_position_ids(
    input_ids: Any,
    rope: RopeConfig | Any,
    attention_mask: Any = None,
    image_grid_thw: Any = None,
    video_grid_thw: Any = None,
    second_per_grid: Any = None,
    *,
    use_audio_in_video: bool = False,
    text_row: bool = True,
) -> torch.Tensor:
    """``position_ids`` of a padded ``(B, L)`` batch for the model's ``forward``:
    ``(4, B, L)`` with the text positions first (what transformers' Qwen-VL models
    take from outside, and how they recognise packed documents), or ``(3, B, L)``
    (what ``get_rope_index`` returns) with ``text_row=False``. Padding (mask 0) is 0.

    ``second_per_grid``: the processor's ``second_per_grid_ts`` (Qwen2.5-VL) or
    ``video_second_per_grid`` (Qwen3-Omni)."""
    return _padded_positions(
        input_ids,
        attention_mask,
        rope_config(rope),
        image_grid_thw,
        video_grid_thw,
        second_per_grid,
        use_audio_in_video,
        text_row,
    )


def _padded_positions(
    input_ids: Any,
    attention_mask: Any,
    rope: RopeConfig,
    image_grid_thw: Any,
    video_grid_thw: Any,
    second_per_grid: Any,
    use_audio_in_video: bool,
    text_row: bool,
) -> torch.Tensor:
    """One engine call: the ids and mask (viewed, not copied, when they are int64
    CPU tensors) in, the ``(3 or 4, B, L)`` positions out, filled in one pass."""
    ids = _int64(input_ids, "input_ids")
    if ids.ndim != 2:
        raise OptionError(f"input_ids must be (B, L), got shape {tuple(ids.shape)}")
    mask = np.ones_like(ids) if attention_mask is None else _int64(attention_mask, "attention_mask")
    out = engine.padded_rope_positions(
        ids,
        mask,
        rope._spec,
        _grids(image_grid_thw, "image_grid_thw"),
        _grids(video_grid_thw, "video_grid_thw"),
        _seconds(second_per_grid),
        bool(use_audio_in_video),
        bool(text_row),
    )
    return torch.from_numpy(out)


def batch_rope_position_ids(
    batch: dict[str, Any], rope: RopeConfig | Any, *, text_row: bool = True
) -> torch.Tensor:
    """:func:`rope_position_ids` of a collated (unshifted, padded) batch: its
    ``input_ids``, ``attention_mask`` and the processor's grids and seconds."""
    seconds = batch.get("second_per_grid_ts")
    if seconds is None:
        seconds = batch.get("video_second_per_grid")
    return _padded_positions(
        batch["input_ids"],
        batch.get("attention_mask"),
        rope_config(rope),
        batch.get("image_grid_thw"),
        batch.get("video_grid_thw"),
        seconds,
        bool(batch.get("use_audio_in_video", False)),
        text_row,
    )


__all__ = [
    "FAMILIES",
    "RopeConfig",
    "batch_rope_position_ids",
    "ragged_rope_positions",
    "rope_config",
    "rope_position_ids",
]
