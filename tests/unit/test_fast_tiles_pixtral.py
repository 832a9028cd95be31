"""Pixtral / Mistral 3's tiled fast path against the processor call it replaces: every key
(ids, masks, labels, ``image_sizes`` exactly; ``pixel_values`` bit for bit: the resize is
torchvision's antialiased uint8 bicubic, rescale and normalise the processor's own byte
table, the padding 0.0), at the offline builders' sizes and at the published ones. Settings
it does not reproduce fall back to the processor call (logged once)."""

from __future__ import annotations

import functools
import logging

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import assert_same_batch, assistant, user
from vlm_collate import VLMCollator
from vlm_collate.errors import MediaError
from vlm_collate.families.pixtral import pixtral_collate_fn
from vlm_collate.pipeline import encode
from vlm_collate.pipeline.fast_tiles import tiled_encoding
from vlm_collate.processor.tiles import tile_plan
from vlm_collate.testing.families import mistral3_processor, pixtral_processor

PIXEL_TOLERANCE = 0.0
"""Largest pixel difference allowed between the fast path and the processor (measured: 0)."""

BUILDERS = {"pixtral": pixtral_processor, "mistral3": mistral3_processor}
PUBLISHED = {"pixtral": {"longest_edge": 1024}, "mistral3": {"longest_edge": 1540}}
"""Pixtral-12B's and Mistral Small 3.1's own preprocessing sizes."""


@functools.cache
def _processor(name: str, **sizes: int):
    """One processor per family and size for the tests that do not change it."""
    return BUILDERS[name](**sizes)


@pytest.fixture(params=sorted(BUILDERS))
def family(request):
    return request.param, _processor(request.param)


def _image(rng: np.random.Generator, h: int, w: int, smooth: bool) -> Image.Image:
    if smooth:  # gradients and sharp edges
        y, x = np.mgrid[0:h, 0:w]
        array = np.stack([x % 256, (y * 3) % 256, ((x ^ y) * 7) % 256], -1).astype(np.uint8)
    else:
        array = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    return Image.fromarray(array)


def _call(processor, texts: list[str], images: list[list[Image.Image]]) -> dict:
    """The processor called as the encode step calls it."""
    flat = [image for sample in images for image in sample]
    return dict(
        processor(
            text=texts,
            images=flat or None,
            padding=True,
            padding_side="right",
            add_special_tokens=False,
            return_tensors="pt",
        )
    )


def _fast(processor, texts, images, **kwargs) -> dict:
    out = tiled_encoding(processor, texts, images, add_special_tokens=False, **kwargs)
    assert out is not None
    return out


# Downscaled, upscaled to whole patches, 1x1, extreme aspect ratios both ways, exact
# multiples of the patch, noise and smooth images, several images in one sample.
SHAPES = [(100, 150), (700, 500), (13, 400), (1, 1), (64, 64), (56, 1100), (400, 8), (28, 112)]


@pytest.mark.parametrize("seed", [0, 1])
def test_encoding_equals_the_processor_call(family, seed):
    _, processor = family
    rng = np.random.default_rng(seed)
    images = [_image(rng, h, w, (k + seed) % 2 == 0) for k, (h, w) in enumerate(SHAPES)]
    per_sample = [[images[0]], [], [images[1], images[2]], [images[3]], images[4:]]
    texts = ["a [IMG] one", "text only", "[IMG]x\n\n[IMG] y", "z[IMG]", "[IMG][IMG]\n[IMG]. [IMG]"]
    slow = _call(processor, texts, per_sample)
    fast = _fast(processor, texts, per_sample)
    assert_same_batch(fast, slow, PIXEL_TOLERANCE)
    # Padding reached: the smallest image's slot is 0.0 past its size, as the processor pads.
    h, w = fast["image_sizes"][3].tolist()
    assert fast["pixel_values"].shape[-2:] != (h, w)
    assert (
        not fast["pixel_values"][3, :, h:, :].any() and not fast["pixel_values"][3, :, :, w:].any()
    )


def test_text_only_batch_has_no_pixel_keys(family):
    _, processor = family
    texts = ["no image here", "nor here, longer text"]
    fast = _fast(processor, texts, [[], []])
    slow = _call(processor, texts, [[], []])
    assert list(fast) == ["input_ids", "attention_mask"]
    assert_same_batch(fast, slow)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_pixels_equal_the_cast_processor_output(family, dtype):
    _, processor = family
    rng = np.random.default_rng(4)
    images = [[_image(rng, 90, 120, False)], [_image(rng, 30, 200, True)]]
    texts = ["[IMG] what", "and [IMG]"]
    slow = _call(processor, texts, images)
    fast = _fast(processor, texts, images, pixel_dtype=dtype)
    assert fast["pixel_values"].dtype == dtype
    assert torch.equal(fast["pixel_values"], slow["pixel_values"].to(dtype))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_sizes_equal_the_processor_call(name):
    processor = _processor(name, **PUBLISHED[name])
    rng = np.random.default_rng(7)
    # 448² (the benchmark's image, kept as is), a large one shrunk to the longest edge,
    # a panorama, and a tiny one enlarged to one patch.
    shapes = [(448, 448), (1100, 1700), (300, 2600), (5, 9)]
    images = [_image(rng, h, w, k % 2 == 0) for k, (h, w) in enumerate(shapes)]
    per_sample = [[images[0]], [images[1], images[2]], [images[3]]]
    texts = ["[IMG] a", "b [IMG] c [IMG]", "[IMG]"]
    slow = _call(processor, texts, per_sample)
    fast = _fast(processor, texts, per_sample)
    assert_same_batch(fast, slow, PIXEL_TOLERANCE)
    assert max(fast["image_sizes"].flatten().tolist()) <= PUBLISHED[name]["longest_edge"]


# --------------------------------------------------------------------------- collate


def _examples(seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    examples = []
    for i in range(5):
        content: list = []
        if i == 3:  # two images in one turn
            content += [{"type": "image", "image": _image(rng, 20, 300, False)}] * 2
        elif i != 1:  # sample 1 is text only
            content.append({"type": "image", "image": _image(rng, 40 + 37 * i, 90 - 9 * i, i > 1)})
        content.append(f"What is in picture {i}?")
        messages = [user(*content), assistant(f"Answer {i}: " + "shapes " * (i + 1))]
        if i % 2:
            messages += [user("And then?"), assistant("Nothing more.")]
        examples.append({"messages": messages})
    return examples


@pytest.fixture
def calls(monkeypatch):
    """Counts the encode step's processor calls."""
    seen: list[int] = []
    original = encode.processor_call
    monkeypatch.setattr(
        encode, "processor_call", lambda *a, **k: seen.append(1) or original(*a, **k)
    )
    return seen


def test_collate_equals_the_processor_path(family, calls):
    _, processor = family
    examples = _examples(0)
    fast = pixtral_collate_fn(examples, processor, shift=False)
    assert not calls  # the fast path made the batch
    slow = pixtral_collate_fn(examples, processor, shift=False, fast_path=False)
    assert calls
    assert_same_batch(dict(fast), dict(slow), PIXEL_TOLERANCE)
    assert "pixel_values" in fast and (fast["labels"] != -100).any()
    # The public collator takes the same path.
    collated = VLMCollator(processor)(examples)
    assert len(calls) == 1
    assert_same_batch(dict(collated), dict(VLMCollator(processor, fast_path=False)(examples)))


def test_an_image_too_thin_for_a_patch_is_the_processors_error(calls):
    processor = _processor("pixtral")
    image = _image(np.random.default_rng(0), 1, 1000, False)  # shrinks to 0 rows
    examples = [{"messages": [user({"type": "image", "image": image}, "x"), assistant("y")]}]
    with pytest.raises(MediaError, match="sample 0") as fast:
        pixtral_collate_fn(examples, processor)
    assert calls  # the fast path handed the batch to the processor, which refused it
    with pytest.raises(MediaError) as slow:
        pixtral_collate_fn(examples, processor, fast_path=False)
    assert str(fast.value) == str(slow.value)


# --------------------------------------------------------------------------- fallbacks


def _logged(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "fast path off" in r.getMessage()]


class PixtralProcessor(type(_processor("pixtral"))):  # type: ignore[misc]
    """A subclass under transformers' name (the family still matches)."""


def _subclass(processor) -> None:
    processor.__class__ = PixtralProcessor


def _pil_backend(processor) -> None:
    from transformers.models.pixtral.image_processing_pil_pixtral import (
        PixtralImageProcessorPil,
    )

    ip = processor.image_processor
    processor.image_processor = PixtralImageProcessorPil(
        size=dict(ip.size.items()) if hasattr(ip.size, "items") else ip.size,
        patch_size=ip.patch_size,
    )


def _setting(**values):
    def change(processor) -> None:
        ip = processor.image_processor
        for attribute, value in values.items():
            # None: the method itself, set on the instance (a replacement the plan refuses).
            setattr(ip, attribute, getattr(ip, attribute) if value is None else value)

    return change


@pytest.mark.parametrize(
    "change, reason",
    [
        (_subclass, "is not transformers' PixtralProcessor"),
        (_pil_backend, "is not transformers' PixtralImageProcessor"),
        (_setting(resample=1), "only bicubic and bilinear"),
        (_setting(do_pad=False), "do_pad=False"),
        (_setting(do_resize=False), "do_resize=False"),
        (_setting(resize=None), "resize is replaced on the instance"),
        (_setting(do_rescale=False, do_normalize=False), "uint8 pixel values"),
    ],
)
def test_settings_it_does_not_reproduce_fall_back_logged_once(change, reason, caplog, calls):
    processor = pixtral_processor()
    change(processor)
    rng = np.random.default_rng(1)
    images = [[_image(rng, 30, 50, False)]]
    with caplog.at_level(logging.INFO, logger="vlm_collate"):
        assert tiled_encoding(processor, ["[IMG] x"], images) is None
        assert tiled_encoding(processor, ["[IMG] y"], images) is None
        assert tile_plan(processor) is None
    logged = _logged(caplog)
    assert len(logged) == 1 and reason in logged[0], logged
    # The collate still works: it calls the processor (one image: do_pad=False stacks
    # only images of one size).
    batch = pixtral_collate_fn(_examples(1)[:2], processor, shift=False)
    assert calls and "pixel_values" in batch


def test_bilinear_is_reproduced_where_torch_resizes_uint8():
    from vlm_collate.processor.tiles.pixtral import uint8_resize_reason

    processor = pixtral_processor()
    processor.image_processor.resample = 2
    if uint8_resize_reason(2) is not None:
        assert tile_plan(processor) is None
        return
    rng = np.random.default_rng(2)
    images = [[_image(rng, 300, 120, False), _image(rng, 7, 9, True)]]
    texts = ["[IMG] and [IMG]"]
    plan = tile_plan(processor)
    assert plan is not None and plan.interpolation == "bilinear"
    assert_same_batch(_fast(processor, texts, images), _call(processor, texts, images))


def test_image_rows_written_by_the_engine_or_in_full_equal_the_processor(family):
    """``[IMG]`` tokenizes alone in the tekken vocabulary: each row is one ``[IMG]`` in the
    text, repeated by the engine; with the runs written out in full (a tokenizer where it
    would not tokenize alone) the batch is the same."""
    import dataclasses

    from vlm_collate.processor.profile import profile_of

    _, processor = family
    plan = tile_plan(processor)
    assert plan is not None and plan.repeated() == processor.image_token_id
    tiles = plan.image_tiles(100, 150)
    assert tiles.text.count("[IMG]") == len(tiles.repeats) == tiles.text.count("[IMG_BREAK]") + 1
    rng = np.random.default_rng(5)
    images = [[_image(rng, 100, 150, True)], [], [_image(rng, 19, 700, False)] * 2]
    texts = ["x [IMG] y", "text", "[IMG]\n[IMG]"]
    slow = _call(processor, texts, images)
    assert_same_batch(_fast(processor, texts, images), slow)
    profile = profile_of(processor)
    full = dataclasses.replace(plan, image_id=None)
    assert full.repeated() is None and "[IMG][IMG]" in full.image_tiles(100, 150).text
    profile._memo["tile_plan"] = full
    try:
        assert_same_batch(_fast(processor, texts, images), slow)
    finally:
        profile._memo["tile_plan"] = plan


def test_height_and_width_bounds_are_reproduced():
    """A ``size`` of height and width (instead of ``longest_edge``) bounds each side."""
    processor = pixtral_processor()
    processor.image_processor.size = {"height": 48, "width": 80}
    plan = tile_plan(processor)
    assert plan is not None and (plan.max_height, plan.max_width) == (48, 80)
    rng = np.random.default_rng(9)
    images = [[_image(rng, 300, 120, False), _image(rng, 20, 500, True)], [_image(rng, 5, 7, True)]]
    texts = ["[IMG] and [IMG]", "[IMG]"]
    assert_same_batch(_fast(processor, texts, images), _call(processor, texts, images))
