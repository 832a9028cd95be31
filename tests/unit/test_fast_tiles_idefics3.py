"""Idefics3 / SmolVLM's tiled fast path against the processor call it replaces, and the
Lanczos-3 filter it needs (their default resample): torchvision >= 0.27 resizes uint8
with torch's own ``lanczos`` mode on CPU, the same int16-weight separable arithmetic as
bicubic with the Lanczos-3 weights, which the shared kernel reproduces bit for bit."""

from __future__ import annotations

import dataclasses
import functools
import logging

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

from helpers import assert_same_batch, assistant, user
from vlm_collate import VLMCollator, engine, testing
from vlm_collate.families.idefics3 import idefics3_collate_fn
from vlm_collate.pipeline import encode
from vlm_collate.pipeline.fast_tiles import tiled_encoding
from vlm_collate.processor.profile import profile_of
from vlm_collate.processor.tiles import tile_plan
from vlm_collate.testing.families import idefics3_processor, smolvlm_processor

PIXEL_TOLERANCE = 0.0
"""Largest pixel difference allowed between the fast path and the processor (measured: 0)."""

LANCZOS_SIZES = [
    ((50, 70), (120, 160)),  # upscaled
    ((300, 200), (97, 61)),  # downscaled
    ((1, 1), (6, 6)),
    ((13, 400), (8, 1456)),  # extreme aspect, one side up, the other down
    ((728, 1092), (364, 364)),
    ((448, 448), (1456, 1456)),
    ((3000, 20), (1456, 10)),
    ((364, 364), (364, 364)),  # the same size: the identity
]


@pytest.mark.parametrize("source, target", LANCZOS_SIZES)
def test_lanczos_resize_equals_torchvision(source, target):
    rng = np.random.default_rng(sum(source) + sum(target))
    image = rng.integers(0, 256, (*source, 3), dtype=np.uint8)
    table = torch.arange(256, dtype=torch.float32).repeat(3).contiguous()
    h, w = target
    out = torch.full((1, 3, h, w), float("nan"))
    engine.write_tiles(
        [image],
        np.array([[0, -1, h, w]], dtype=np.int64),
        np.array([[0, 0, 0, 0, 0]], dtype=np.int64),
        out.numpy(),
        table.numpy(),
        np.zeros(3, dtype=np.float32),
        "lanczos",
        2,
    )
    chw = torch.from_numpy(image).permute(2, 0, 1)
    want = F.resize(chw, [h, w], interpolation=F.InterpolationMode.LANCZOS, antialias=True)
    assert torch.equal(out[0], want.float())


# --------------------------------------------------------------------------- the fast path

BUILDERS = {"idefics3": idefics3_processor, "smolvlm": smolvlm_processor}
PUBLISHED = {"idefics3": {"longest_edge": 1456}, "smolvlm": {"longest_edge": 2048}}
"""Idefics3-8B's and SmolVLM-256M/500M's own preprocessing sizes (4 x 364, 4 x 512)."""


@functools.cache
def _processor(name: str, **sizes: int):
    """One processor per family and size for the tests that do not change it."""
    return BUILDERS[name](**sizes)


@pytest.fixture(params=["idefics3", pytest.param("smolvlm", marks=pytest.mark.slow)])
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
    """The processor called as the encode step calls it (images nested per sample)."""
    kwargs = {"images": images} if any(images) else {}
    return dict(
        processor(
            text=texts,
            padding=True,
            padding_side="right",
            add_special_tokens=False,
            return_tensors="pt",
            **kwargs,
        )
    )


def _fast(processor, texts, images, **kwargs) -> dict:
    out = tiled_encoding(processor, texts, images, add_special_tokens=False, **kwargs)
    assert out is not None
    return out


# Enlarged and shrunk to the longest edge, 1x1, extreme aspect ratios both ways, exactly
# one sub-image, noise and smooth images, several images in one sample.
SHAPES = [(100, 150), (700, 500), (13, 400), (1, 1), (364, 364), (56, 1100), (400, 8), (9, 12)]


@pytest.mark.parametrize("seed", [0, 1])
def test_encoding_equals_the_processor_call(family, seed):
    _, processor = family
    rng = np.random.default_rng(seed)
    images = [_image(rng, h, w, (k + seed) % 2 == 0) for k, (h, w) in enumerate(SHAPES)]
    per_sample = [[images[0]], [], [images[1], images[2]], [images[3]], images[4:]]
    texts = ["a <image> one", "text only", "<image>x\n\n<image> y", "z<image>", "<image>" * 4]
    slow = _call(processor, texts, per_sample)
    fast = _fast(processor, texts, per_sample)
    assert_same_batch(fast, slow, PIXEL_TOLERANCE)
    # Missing frames: the text-only sample's are all 0.0 and masked out.
    assert not fast["pixel_values"][1].any() and not fast["pixel_attention_mask"][1].any()
    assert fast["pixel_attention_mask"][4].any()


def test_text_only_batch_has_no_pixel_keys(family):
    _, processor = family
    texts = ["no image here", "nor here, longer text"]
    fast = _fast(processor, texts, [[], []])
    assert list(fast) == ["input_ids", "attention_mask"]
    assert_same_batch(fast, _call(processor, texts, [[], []]))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_pixels_equal_the_cast_processor_output(family, dtype):
    _, processor = family
    rng = np.random.default_rng(4)
    images = [[_image(rng, 90, 120, False)], [_image(rng, 30, 200, True)]]
    texts = ["<image> what", "and <image>"]
    slow = _call(processor, texts, images)
    fast = _fast(processor, texts, images, pixel_dtype=dtype)
    assert fast["pixel_values"].dtype == dtype
    assert torch.equal(fast["pixel_values"], slow["pixel_values"].to(dtype))


@pytest.mark.parametrize(
    "change",
    [
        {"do_image_splitting": False},
        {"resample": 3},
        {"size": {"height": 300, "width": 500}},
        {"size": {"longest_edge": 200}},  # below the sub-image side: one frame each
    ],
    ids=["no-splitting", "bicubic", "fixed-size", "small-longest-edge"],
)
def test_other_settings_it_reproduces(change):
    processor = idefics3_processor()
    for attribute, value in change.items():
        setattr(processor.image_processor, attribute, value)
    rng = np.random.default_rng(6)
    images = [[_image(rng, 80, 300, True)], [_image(rng, 500, 20, False), _image(rng, 2, 3, True)]]
    texts = ["<image> a", "b <image><image>"]
    assert tile_plan(processor) is not None
    assert_same_batch(_fast(processor, texts, images), _call(processor, texts, images))


def test_lanczos_on_older_torchvision_is_bicubic_as_transformers_falls_back(monkeypatch):
    """transformers resizes LANCZOS as BICUBIC where torchvision < 0.27: so does the plan."""
    from transformers import image_processing_backends
    from transformers.utils import import_utils

    monkeypatch.setattr(
        image_processing_backends, "is_torchvision_greater_or_equal", lambda v: False
    )
    monkeypatch.setattr(import_utils, "is_torchvision_greater_or_equal", lambda v: False)
    processor = idefics3_processor()
    plan = tile_plan(processor)
    assert plan is not None and plan.interpolation == "bicubic"
    rng = np.random.default_rng(8)
    images = [[_image(rng, 120, 90, False)]]
    texts = ["<image> a"]
    assert_same_batch(_fast(processor, texts, images), _call(processor, texts, images))


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_sizes_equal_the_processor_call(name):
    processor = _processor(name, **PUBLISHED[name])
    rng = np.random.default_rng(7)
    # 448² (the benchmark's image: 4 x 4 sub-images and the global one), a panorama, a
    # large one and a tiny one.
    shapes = [(448, 448), (300, 2600), (1800, 1200), (5, 9)]
    images = [_image(rng, h, w, k % 2 == 0) for k, (h, w) in enumerate(shapes)]
    per_sample = [[images[0]], [images[1]], [images[2], images[3]]]
    texts = ["<image> a", "b <image> c", "<image><image>"]
    slow = _call(processor, texts, per_sample)
    fast = _fast(processor, texts, per_sample)
    assert_same_batch(fast, slow, PIXEL_TOLERANCE)
    # 448² is enlarged to the longest edge: 4 x 4 sub-images and the global image.
    assert int(fast["pixel_attention_mask"][0].flatten(1).any(1).sum()) == 17


def test_image_runs_written_by_the_engine_or_in_full_equal_the_processor(family):
    """``<image>`` tokenizes alone in both vocabularies: each run is one ``<image>`` in the
    text, repeated by the engine; written out in full the batch is the same."""
    _, processor = family
    plan = tile_plan(processor)
    assert plan is not None and plan.repeated() == processor.image_token_id
    rng = np.random.default_rng(5)
    images = [[_image(rng, 100, 150, True)], [], [_image(rng, 19, 700, False)] * 2]
    texts = ["x <image> y", "text", "<image>\n<image>"]
    slow = _call(processor, texts, images)
    assert_same_batch(_fast(processor, texts, images), slow)
    profile = profile_of(processor)
    full = dataclasses.replace(plan, image_id=None)
    profile._memo["tile_plan"] = full
    try:
        assert_same_batch(_fast(processor, texts, images), slow)
    finally:
        profile._memo["tile_plan"] = plan


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
        messages = [user(*content), assistant([f"Answer {i}: " + "shapes " * (i + 1)])]
        if i % 2:
            messages += [user("And then?"), assistant(["Nothing more."])]
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
    fast = idefics3_collate_fn(examples, processor, shift=False)
    assert not calls  # the fast path made the batch
    slow = idefics3_collate_fn(examples, processor, shift=False, fast_path=False)
    assert calls
    assert_same_batch(dict(fast), dict(slow), PIXEL_TOLERANCE)
    assert "pixel_values" in fast and (fast["labels"] != -100).any()
    collated = VLMCollator(processor)(examples)
    assert len(calls) == 1
    assert_same_batch(dict(collated), dict(VLMCollator(processor, fast_path=False)(examples)))


def test_smolvlm_videos_call_the_processor(calls):
    processor = _processor("smolvlm")
    video = {"type": "video", "video": testing.video(frames=4)}
    examples = [
        {"messages": [user(video, "What happens?"), assistant(["Things."])]},
        _examples(2)[0],
    ]
    fast = idefics3_collate_fn(examples, processor, shift=False)
    assert calls  # a batch with a video is the processor's
    assert_same_batch(
        dict(fast), dict(idefics3_collate_fn(examples, processor, shift=False, fast_path=False))
    )


# --------------------------------------------------------------------------- fallbacks


def _logged(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "fast path off" in r.getMessage()]


class Idefics3Processor(type(_processor("idefics3"))):  # type: ignore[misc]
    """A subclass under transformers' name (the family still matches)."""


def _subclass(processor) -> None:
    processor.__class__ = Idefics3Processor


def _pil_backend(processor) -> None:
    from transformers.models.idefics3.image_processing_pil_idefics3 import (
        Idefics3ImageProcessorPil,
    )

    ip = processor.image_processor
    processor.image_processor = Idefics3ImageProcessorPil(
        size=dict(ip.size.items()) if hasattr(ip.size, "items") else ip.size,
        max_image_size=ip.max_image_size,
        image_mean=ip.image_mean,
        image_std=ip.image_std,
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
        (_subclass, "is not transformers' Idefics3Processor"),
        (_pil_backend, "is not transformers' Idefics3ImageProcessor"),
        (_setting(resample=0), "lanczos, bicubic and bilinear are reproduced"),
        (_setting(do_pad=False), "do_pad=False"),
        (_setting(do_resize=False), "do_resize=False"),
        (_setting(split_images=None), "split_images is replaced on the instance"),
        (_setting(do_rescale=False, do_normalize=False), "uint8 pixel values"),
    ],
    ids=["subclass", "pil", "nearest", "do_pad", "do_resize", "replaced", "uint8"],
)
def test_settings_it_does_not_reproduce_fall_back_logged_once(change, reason, caplog, calls):
    processor = idefics3_processor()
    change(processor)
    rng = np.random.default_rng(1)
    images = [[_image(rng, 30, 50, False)]]
    with caplog.at_level(logging.INFO, logger="vlm_collate"):
        assert tiled_encoding(processor, ["<image> x"], images) is None
        assert tiled_encoding(processor, ["<image> y"], images) is None
        assert tile_plan(processor) is None
    logged = _logged(caplog)
    assert len(logged) == 1 and reason in logged[0], logged
    # The collate still works: it calls the processor (one sample: without do_pad the
    # processor stacks only samples of as many frames).
    batch = idefics3_collate_fn(_examples(1)[:1], processor, shift=False)
    assert calls and "pixel_values" in batch


# --------------------------------------------------------------------------- mask memory


def test_the_mask_reuses_its_storage_once_the_batch_is_let_go():
    """``pixel_attention_mask`` is drawn from the encode step's pool (apart from
    ``pixel_values``'): a steady-state call writes into memory already paged in, and a
    batch still held is never overwritten."""
    processor = _processor("idefics3")
    examples = _examples(3)
    first = idefics3_collate_fn(examples, processor, shift=False)
    held = first["pixel_attention_mask"].clone()
    second = idefics3_collate_fn(examples, processor, shift=False)  # `first` is held
    assert second["pixel_attention_mask"].data_ptr() != first["pixel_attention_mask"].data_ptr()
    assert torch.equal(first["pixel_attention_mask"], held)
    address = first["pixel_attention_mask"].data_ptr()
    del first
    third = idefics3_collate_fn(examples, processor, shift=False)
    assert third["pixel_attention_mask"].data_ptr() == address
    slow = idefics3_collate_fn(examples, processor, shift=False, fast_path=False)
    assert_same_batch(dict(third), dict(slow))
    assert_same_batch(dict(second), dict(slow))


class _SharingCollate:
    """The fast-path collate, reporting from inside the worker whether its pixel mask was
    in shared memory and stayed in place when pickled for the main process."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, examples):
        from multiprocessing.reduction import ForkingPickler

        batch = dict(idefics3_collate_fn(examples, self.processor, shift=False))
        mask = batch["pixel_attention_mask"]
        shared, address = mask.is_shared(), mask.data_ptr()
        ForkingPickler.dumps(mask)  # what the worker's result queue does to it
        batch["was_shared"] = torch.tensor(shared)
        batch["not_copied"] = torch.tensor(mask.data_ptr() == address)
        return batch


def test_the_mask_is_made_in_shared_memory_in_a_dataloader_worker():
    from torch.utils.data import DataLoader

    processor = _processor("idefics3")
    examples = _examples(4)
    loader = DataLoader(
        examples,
        batch_size=len(examples),
        num_workers=1,
        collate_fn=_SharingCollate(processor),
        multiprocessing_context="fork",
    )
    (batch,) = list(loader)
    assert batch.pop("was_shared").item() and batch.pop("not_copied").item()
    slow = idefics3_collate_fn(examples, processor, shift=False, fast_path=False)
    assert_same_batch(batch, dict(slow))
