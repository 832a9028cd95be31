"""Offline processors for the families beyond Qwen2.5-VL: tests, demos, benchmarks.

Real ``transformers`` classes where they exist: ``Qwen3OmniMoeProcessor`` (on the
real Qwen2 vocabulary with the Qwen3/Omni tokens at their real ids),
``Phi4MultimodalProcessor`` and ``Kimi_K25Processor``. Phi-4 and Kimi do not use
the Qwen2 vocabulary, so their tokenizers are small byte-level BPE tokenizers
trained here in well under a second that hold each family's special tokens.

Kimi-VL, the original Kimi K2.5 processor and Nemotron-Parse exist only as
remote code on a model hub: :class:`KimiVLStandIn`, :class:`KimiK25RemoteStandIn`
and :class:`NemotronParseStandIn` are **test stand-ins** that follow their
public interfaces. Nothing here touches the network. Sizes are small so tests
stay fast.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from transformers import BatchFeature, ProcessorMixin

__all__ = [
    "KIMI_K25_TEMPLATE",
    "KIMI_VL_TEMPLATE",
    "PHI4_TEMPLATE",
    "KimiK25RemoteStandIn",
    "KimiVLStandIn",
    "NemotronParseStandIn",
    "kimi_k25_processor",
    "kimi_k25_remote_processor",
    "kimi_tokenizer",
    "kimi_vl_processor",
    "nemotron_parse_processor",
    "phi4_multimodal_processor",
    "qwen3_omni_processor",
    "small_tokenizer",
    "video",
    "waveform",
]

# --------------------------------------------------------------------------- small tokenizers

_WORDS = (
    "the a an is are was what which who where when how why yes no not and or but of to "
    "in on at for with from by this that these those it its image picture photo audio "
    "sound video frame cat dog bird car tree house sky blue red green white black small "
    "large left right top bottom describe answer question shown show says said there "
    "here one two three four five many some number text table page document title header "
    "footer caption figure markdown bounding box class label transcribe speech speaker "
    "music noise quiet loud hello world thanks please sure"
)


def _corpus() -> list[str]:
    rng = np.random.default_rng(0)
    lines = []
    for _ in range(400):
        words = rng.choice(_WORDS.split(), size=int(rng.integers(4, 14)))
        line = " ".join(words)
        lines.append(line.capitalize() + rng.choice([".", "?", "!", ",", ":"]) + " 12 34.5\n")
    return lines


@functools.lru_cache(maxsize=8)
def _trained_bpe(specials: tuple[str, ...], vocab_size: int) -> str:
    """A byte-level BPE trained on a fixed corpus, as JSON (cached per process)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(specials),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_corpus(), trainer)
    return tokenizer.to_str()


def small_tokenizer(
    specials: Sequence[str],
    *,
    named: Mapping[str, str] | None = None,
    prefix: Sequence[str] = (),
    suffix: Sequence[str] = (),
    chat_template: str | None = None,
    vocab_size: int = 1200,
    **special_tokens: str,
) -> Any:
    """A small fast tokenizer (byte-level BPE, any text encodes) holding ``specials``.

    ``special_tokens`` names the standard ones (``bos_token=``, ``eos_token=``,
    ``pad_token=``, ``unk_token=``); ``named`` the model-specific ones
    (``{"image_token": "<|media_pad|>"}``), which become attributes with ``_id``
    twins as in a released tokenizer config. ``prefix``/``suffix`` are the
    special tokens added around the text when ``add_special_tokens=True``.
    """
    from tokenizers import Tokenizer, processors
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer.from_str(_trained_bpe(tuple(specials), vocab_size))
    if prefix or suffix:
        single = " ".join([*prefix, "$A", *suffix])
        pair = " ".join([*prefix, "$A", *suffix, "$B:1", *suffix])
        used = dict.fromkeys([*prefix, *suffix])
        backend.post_processor = processors.TemplateProcessing(
            single=single, pair=pair, special_tokens=[(t, backend.token_to_id(t)) for t in used]
        )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        extra_special_tokens=dict(named or {}),
        clean_up_tokenization_spaces=False,
        **special_tokens,
    )
    tokenizer.chat_template = chat_template
    return tokenizer


def _checked_ids(tokenizer: Any, tokens: Sequence[str]) -> None:
    unk = tokenizer.unk_token_id
    for token in tokens:
        tid = tokenizer.convert_tokens_to_ids(token)
        if tid is None or (tid == unk and token != tokenizer.unk_token):
            raise RuntimeError(f"{token!r} is missing from the built tokenizer")


# --------------------------------------------------------------------------- Qwen3-Omni

_QWEN3_OMNI_NAMED = {
    "image_token": "<|image_pad|>",
    "video_token": "<|video_pad|>",
    "audio_token": "<|audio_pad|>",
    "vision_bos_token": "<|vision_start|>",
    "vision_eos_token": "<|vision_end|>",
    "audio_bos_token": "<|audio_start|>",
    "audio_eos_token": "<|audio_end|>",
}


def qwen3_omni_processor(min_pixels: int = 32 * 32, max_pixels: int = 128 * 128) -> Any:
    """A real ``Qwen3OmniMoeProcessor``: Qwen2-VL image and video processors with
    Qwen3-Omni's 16-pixel patches, a ``WhisperFeatureExtractor`` (128 mel bins), and
    the real Qwen2 vocabulary with ``<|audio_start|>``=151669, ``<|audio_end|>``=151670,
    ``<|audio_pad|>``=151675. The processor pads on the left by default, as released.
    """
    from transformers import (
        Qwen2VLImageProcessor,
        Qwen2VLVideoProcessor,
        Qwen3OmniMoeProcessor,
        WhisperFeatureExtractor,
    )

    from .builders import CHATML_TEMPLATE, qwen3_omni_tokenizer

    tokenizer = qwen3_omni_tokenizer()
    # What ``from_pretrained`` does with the released config's named extra special tokens.
    tokenizer._set_model_specific_special_tokens(_QWEN3_OMNI_NAMED)
    vision = {"patch_size": 16, "merge_size": 2, "temporal_patch_size": 2}
    return Qwen3OmniMoeProcessor(
        image_processor=Qwen2VLImageProcessor(
            min_pixels=min_pixels, max_pixels=max_pixels, **vision
        ),
        video_processor=Qwen2VLVideoProcessor(
            min_pixels=min_pixels, max_pixels=max_pixels, cap_pixels_per_frame=True, **vision
        ),
        feature_extractor=WhisperFeatureExtractor(feature_size=128),
        tokenizer=tokenizer,
        chat_template=CHATML_TEMPLATE,
    )


# --------------------------------------------------------------------------- Phi-4-multimodal

#: Phi-4-multimodal's chat template: ``<|role|>content<|end|>``, media as the
#: tokenizer's image (``<|endoftext10|>``) and audio (``<|endoftext11|>``) tokens, and
#: ``eos_token`` after the last turn when no generation prompt is added, as released.
PHI4_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|' + message['role'] + '|>' -}}"
    "{%- if message['content'] is string -%}{{- message['content'] -}}"
    "{%- else -%}{%- for item in message['content'] -%}"
    "{%- if item['type'] == 'image' -%}{{- '<|endoftext10|>' -}}"
    "{%- elif item['type'] == 'audio' -%}{{- '<|endoftext11|>' -}}"
    "{%- elif item['type'] == 'text' -%}{{- item['text'] -}}"
    "{%- endif -%}{%- endfor -%}{%- endif -%}"
    "{{- '<|end|>' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|assistant|>' -}}"
    "{%- else -%}{{- eos_token -}}{%- endif -%}"
)

_PHI4_SPECIALS = (
    "<|endoftext|>",
    "<|endoftext10|>",
    "<|endoftext11|>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|end|>",
    "<|tool|>",
    "<|/tool|>",
)


def phi4_multimodal_processor(image_size: int = 448) -> Any:
    """A real ``Phi4MultimodalProcessor`` (its own image processor and audio feature
    extractor, 16 kHz) on a small trained tokenizer with Phi-4's special tokens:
    image token ``<|endoftext10|>``, audio token ``<|endoftext11|>``, pad and eos
    ``<|endoftext|>``. An image costs at least 273 tokens (Phi-4's fixed 256 global
    tokens plus separators), an audio second about 13."""
    from transformers import (
        Phi4MultimodalFeatureExtractor,
        Phi4MultimodalImageProcessor,
        Phi4MultimodalProcessor,
    )

    tokenizer = small_tokenizer(
        _PHI4_SPECIALS,
        named={"image_token": "<|endoftext10|>", "audio_token": "<|endoftext11|>"},
        chat_template=PHI4_TEMPLATE,
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    _checked_ids(tokenizer, _PHI4_SPECIALS)
    return Phi4MultimodalProcessor(
        image_processor=Phi4MultimodalImageProcessor(
            size={"height": image_size, "width": image_size}, dynamic_hd=4
        ),
        audio_processor=Phi4MultimodalFeatureExtractor(),
        tokenizer=tokenizer,
        chat_template=PHI4_TEMPLATE,
    )


# ------------------------------------------------------------------- Kimi tokenizers and templates

_KIMI_SPECIALS = (
    "[UNK]",
    "[BOS]",
    "[EOS]",
    "[PAD]",
    "<|im_end|>",
    "<|im_user|>",
    "<|im_assistant|>",
    "<|im_system|>",
    "<|im_middle|>",
    "<|media_start|>",
    "<|media_begin|>",
    "<|media_content|>",
    "<|media_end|>",
    "<|media_pad|>",
    "<|kimi_k25_video_placeholder|>",
    "<think>",
    "</think>",
)


def _kimi_template(media_open: str, reply_prefix: str) -> str:
    return (
        "{%- for message in messages -%}"
        "{%- if message['role'] == 'user' -%}{{- '<|im_user|>' -}}"
        "{%- elif message['role'] == 'assistant' -%}{{- '<|im_assistant|>' -}}"
        "{%- else -%}{{- '<|im_system|>' -}}{%- endif -%}"
        "{{- message['role'] + '<|im_middle|>' -}}"
        "{%- if message['role'] == 'assistant' -%}{{- '" + reply_prefix + "' -}}{%- endif -%}"
        "{%- if message['content'] is string -%}{{- message['content'] -}}"
        "{%- else -%}{%- for item in message['content'] -%}"
        "{%- if item['type'] == 'image' -%}"
        "{{- '" + media_open + "image<|media_content|><|media_pad|><|media_end|>' -}}"
        "{%- elif item['type'] == 'text' -%}{{- item['text'] -}}"
        "{%- endif -%}{%- endfor -%}{%- endif -%}"
        "{{- '<|im_end|>' -}}"
        "{%- endfor -%}"
        "{%- if add_generation_prompt -%}"
        "{{- '<|im_assistant|>assistant<|im_middle|>" + reply_prefix + "' -}}"
        "{%- endif -%}"
    )


#: Kimi-VL: ``<|im_user|>user<|im_middle|>…<|im_end|>`` then
#: ``<|im_assistant|>assistant<|im_middle|>…<|im_end|>``; images as
#: ``<|media_start|>image<|media_content|><|media_pad|><|media_end|>``.
KIMI_VL_TEMPLATE = _kimi_template("<|media_start|>", "")

#: Kimi K2.5: as Kimi-VL with ``<|media_begin|>``, and past assistant turns opened
#: by an empty thinking block ``<think></think>``.
KIMI_K25_TEMPLATE = _kimi_template("<|media_begin|>", "<think></think>")


def kimi_tokenizer(chat_template: str | None = None) -> Any:
    """A small trained tokenizer with Kimi's special tokens: ``[BOS]`` (added in front
    when ``add_special_tokens=True``, as Kimi's tokenizer does), ``[EOS]``, ``[PAD]``,
    ``[UNK]``, the ``<|im_*|>`` role tokens and the ``<|media_*|>`` image tokens."""
    tokenizer = small_tokenizer(
        _KIMI_SPECIALS,
        prefix=("[BOS]",),
        chat_template=chat_template,
        bos_token="[BOS]",
        eos_token="[EOS]",
        pad_token="[PAD]",
        unk_token="[UNK]",
    )
    _checked_ids(tokenizer, _KIMI_SPECIALS)
    return tokenizer


def _kimi_image_processor(max_patches: int) -> Any:
    """Transformers' Kimi K2.5 image processor (14-pixel patches, NaViT resize, padded
    to a multiple of the 2x2 merge kernel), capped at ``max_patches`` patches."""
    from transformers.models.kimi_k25.image_processing_kimi_k25 import Kimi_K25ImageProcessor

    return Kimi_K25ImageProcessor(max_patches=max_patches)


def _as_list(images: Any) -> list[Any]:
    if images is None:
        return []
    return list(images) if isinstance(images, (list, tuple)) else [images]


def _expand_in_texts(texts: list[str], token: str, counts: Sequence[int]) -> list[str]:
    """Each ``token`` in ``texts`` (in order over the batch) repeated ``counts[i]`` times."""
    found = sum(t.count(token) for t in texts)
    if found != len(counts):
        raise ValueError(
            f"the texts hold {found} {token} placeholders but {len(counts)} images were given"
        )
    it = iter(counts)
    return [
        "".join(p + token * next(it) for p in t.split(token)[:-1]) + t.split(token)[-1]
        for t in texts
    ]


# --------------------------------------------------------------------------- Kimi-VL (stand-in)


class KimiVLStandIn(ProcessorMixin):
    """**Test stand-in** for Kimi-VL's remote-code processor (same public interface).

    ``processor(images=..., text=..., **tokenizer_kwargs)`` returns ``input_ids``,
    ``attention_mask``, ``pixel_values`` ``(patches, 3, 14, 14)`` and
    ``image_grid_hws`` ``(N, 2)``; the i-th ``<|media_pad|>`` over the batch is
    expanded to ``image_grid_hws[i].prod() // 4`` tokens.
    """

    model_type = "kimi_vl"
    """The model type it stands in for; :func:`~vlm_collate.get_collate_fn` resolves by it."""

    def __init__(self, image_processor: Any, tokenizer: Any, chat_template: str | None = None):
        super().__init__(image_processor, tokenizer, chat_template=chat_template)
        self.image_token = "<|media_pad|>"

    def __call__(self, images: Any = None, text: Any = None, **kwargs: Any) -> BatchFeature:
        texts = [text] if isinstance(text, str) else list(text or [])
        data: dict[str, Any] = {}
        images = _as_list(images)
        if images:
            pixels = self.image_processor(images, return_tensors="pt")
            hws = pixels["image_grid_thw"][:, 1:]
            data = {"pixel_values": pixels["pixel_values"], "image_grid_hws": hws}
            texts = _expand_in_texts(texts, self.image_token, (hws.prod(-1) // 4).tolist())
        elif any(self.image_token in t for t in texts):
            raise ValueError("the text holds <|media_pad|> placeholders but no images were given")
        data.update(self.tokenizer(texts, **kwargs))
        return BatchFeature(data)


def kimi_vl_processor(max_patches: int = 256) -> KimiVLStandIn:
    """Kimi-VL **test stand-in** processor on the Kimi tokenizer and Kimi-VL template."""
    return KimiVLStandIn(
        _kimi_image_processor(max_patches), kimi_tokenizer(KIMI_VL_TEMPLATE), KIMI_VL_TEMPLATE
    )


# --------------------------------------------------------------------------- Kimi K2.5


class KimiK25RemoteStandIn(ProcessorMixin):
    """**Test stand-in** for Kimi K2.5's original remote-code processor.

    ``processor(text=..., medias=[{"type": "image", "image": ...}], return_tensors=...)``
    returns ``input_ids`` and ``attention_mask`` with **one** ``<|media_pad|>`` per
    image (not expanded), ``pixel_values`` and ``grid_thws`` ``(N, 3)``; the model
    expands each placeholder to ``t * (h / 2) * (w / 2)`` tokens.
    """

    model_type = "kimi_k25"
    """The model type it stands in for; :func:`~vlm_collate.get_collate_fn` resolves by it."""

    def __init__(self, image_processor: Any, tokenizer: Any, chat_template: str | None = None):
        super().__init__(image_processor, tokenizer, chat_template=chat_template)

    @property
    def media_placeholder_token_id(self) -> int:
        """Id of ``<|media_pad|>``."""
        return int(self.tokenizer.convert_tokens_to_ids("<|media_pad|>"))

    def __call__(
        self, text: Any = None, medias: Sequence[Mapping[str, Any]] | None = None, **kwargs: Any
    ) -> BatchFeature:
        data: dict[str, Any] = {}
        images = [m["image"] for m in medias or [] if m.get("type") == "image"]
        if images:
            pixels = self.image_processor(images, return_tensors="pt")
            data = {"pixel_values": pixels["pixel_values"], "grid_thws": pixels["image_grid_thw"]}
        data.update(self.tokenizer(text, **kwargs))
        return BatchFeature(data)


def kimi_k25_remote_processor(max_patches: int = 256) -> KimiK25RemoteStandIn:
    """Kimi K2.5 **test stand-in** of the original remote-code processor."""
    return KimiK25RemoteStandIn(
        _kimi_image_processor(max_patches), kimi_tokenizer(KIMI_K25_TEMPLATE), KIMI_K25_TEMPLATE
    )


def kimi_k25_processor(max_patches: int = 256) -> Any:
    """A real ``Kimi_K25Processor`` (transformers' native one: expanded
    ``<|media_pad|>`` runs and ``image_grid_thw``) on the small Kimi tokenizer."""
    from transformers import Kimi_K25Processor
    from transformers.models.kimi_k25.video_processing_kimi_k25 import Kimi_K25VideoProcessor

    tokenizer = kimi_tokenizer(KIMI_K25_TEMPLATE)
    return Kimi_K25Processor(
        image_processor=_kimi_image_processor(max_patches),
        tokenizer=tokenizer,
        video_processor=Kimi_K25VideoProcessor(),
        chat_template=KIMI_K25_TEMPLATE,
    )


# ---------------------------------------------------------------------- Nemotron-Parse (stand-in)

_NEMOTRON_SPECIALS = (
    "<unk>",
    "<s>",
    "</s>",
    "<pad>",
    "<predict_bbox>",
    "<predict_no_bbox>",
    "<predict_classes>",
    "<predict_no_classes>",
    "<output_markdown>",
    "<output_plain>",
    "<output_no_text>",
)


class NemotronParseStandIn(ProcessorMixin):
    """**Test stand-in** for Nemotron-Parse's remote-code processor (encoder-decoder:
    no image tokens in the text).

    ``processor(images=..., text=..., add_special_tokens=..., padding=..., return_tensors=...)``
    returns ``pixel_values`` (one image per text), ``input_ids`` and ``attention_mask``.
    """

    model_type = "nemotron_parse"
    """The model type it stands in for; :func:`~vlm_collate.get_collate_fn` resolves by it."""

    def __init__(self, image_processor: Any, tokenizer: Any):
        super().__init__(image_processor, tokenizer)

    def __call__(
        self,
        images: Any = None,
        text: Any = None,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        return_tensors: str | None = None,
        **kwargs: Any,
    ) -> BatchFeature:
        data: dict[str, Any] = {}
        images = _as_list(images)
        if images:
            pixels = self.image_processor(images, return_tensors=return_tensors)
            data["pixel_values"] = pixels["pixel_values"]
        if text is not None:
            data.update(
                self.tokenizer(
                    text,
                    add_special_tokens=add_special_tokens,
                    padding=padding,
                    return_tensors=return_tensors,
                    **kwargs,
                )
            )
        return BatchFeature(data)


def nemotron_parse_processor(height: int = 64, width: int = 48) -> NemotronParseStandIn:
    """Nemotron-Parse **test stand-in**: a real ``DonutImageProcessor`` (aspect-keeping
    resize and pad, as Nemotron-Parse's) at ``height x width``, and a small trained
    tokenizer with ``<s>``, ``</s>`` (eos), ``<pad>``, ``<unk>`` and the task tokens
    ``<predict_bbox>``, ``<predict_classes>``, ``<output_markdown>``, ...; with
    ``add_special_tokens=True`` it wraps text in ``<s> … </s>``."""
    from transformers import DonutImageProcessor

    tokenizer = small_tokenizer(
        _NEMOTRON_SPECIALS,
        prefix=("<s>",),
        suffix=("</s>",),
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    _checked_ids(tokenizer, _NEMOTRON_SPECIALS)
    image_processor = DonutImageProcessor(
        size={"height": height, "width": width}, do_align_long_axis=False, do_thumbnail=True
    )
    return NemotronParseStandIn(image_processor, tokenizer)


def waveform(seconds: float = 1.0, rate: int = 16_000, seed: int = 0) -> np.ndarray:
    """A generated mono waveform (a tone plus noise), float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate), dtype=np.float32) / rate
    tone = 0.3 * np.sin(2 * np.pi * (220 + 40 * seed) * t)
    return (tone + 0.05 * rng.standard_normal(t.shape)).astype(np.float32)


def video(frames: int = 4, height: int = 64, width: int = 64, seed: int = 0) -> np.ndarray:
    """A generated video ``(T, H, W, 3)`` uint8."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(frames, height, width, 3), dtype=np.uint8)
