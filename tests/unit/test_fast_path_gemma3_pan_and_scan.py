"""Gemma 3's fast path with pan-and-scan against the processor call it replaces: each image
written as the whole image resized to ``size`` and then each crop of the original resized
to ``size`` (the shared tiled step, a crop read in place), the processor's sentence and
one block per crop in the text; every key exactly, pixels bit for bit. Which settings win
(the processor call's own ``_merge_kwargs``) and the fallbacks (logged once)."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as tvF

from helpers import assert_same_batch, assistant, processor_calls, user
from vlm_collate import PackedCollator, VLMCollator, engine
from vlm_collate.errors import EngineError
from vlm_collate.pipeline.fast_path import engine_pixels, fast_encoding
from vlm_collate.processor.fast_plan import PanAndScan, fast_plan, pan_and_scan_crops
from vlm_collate.testing.families import gemma3_processor

BOI = "<start_of_image>"


def _panning(image_size: int = 224, **settings) -> object:
    """The offline Gemma 3 processor whose call pans and scans: the processor-level
    ``images_kwargs`` (which win over the image processor's attributes) set on the
    instance, as a user's processor config would."""
    processor = gemma3_processor(image_size)
    defaults = dict(type(processor).images_kwargs)
    processor.images_kwargs = {**defaults, "do_pan_and_scan": True, **settings}
    return processor


def _image(rng: np.random.Generator, h: int, w: int) -> Image.Image:
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


def _processor_call(processor, texts, images) -> dict:
    kwargs = {"images": images} if any(images) else {}
    return dict(
        processor(
            text=list(texts),
            padding=True,
            padding_side="right",
            add_special_tokens=False,
            return_tensors="pt",
            **kwargs,
        )
    )


def _logged(caplog) -> list[str]:
    """The image fast path's fallback lines (Gemma 3 has no video plan: that line is not one)."""
    return [
        r.getMessage()
        for r in caplog.records
        if "fast path off for Gemma3Processor:" in r.getMessage()
    ]


# --------------------------------------------------------------------------- crops


@pytest.mark.parametrize(
    "settings",
    [
        PanAndScan(256, 4, 1.2),  # the published defaults
        PanAndScan(64, 3, 1.5),
        PanAndScan(1, 9, 1.0),  # tiny crops: some would be empty
        PanAndScan(30, 1, 1.1),  # one crop: the whole image again
    ],
)
def test_crops_are_the_image_processors(settings):
    ip = gemma3_processor().image_processor
    rng = np.random.default_rng(0)
    sizes = [(1, 1), (5, 9), (255, 1000), (300, 900), (900, 300), (250, 260), (896, 1344)]
    sizes += [tuple(int(v) for v in rng.integers(1, 1500, 2)) for _ in range(60)]
    for h, w in sizes:
        position = torch.arange(h * w, dtype=torch.int64).view(1, 1, h, w)
        expected = ip.pan_and_scan_batched(
            position, settings.min_crop_size, settings.max_num_crops, settings.min_ratio_to_activate
        )
        found = pan_and_scan_crops(h, w, settings)
        if found is None:  # an empty crop: the processor's resize would fail on it
            assert any(c.numel() == 0 for c in expected), (h, w)
            continue
        assert len(found) == len(expected), (h, w)
        for (top, left, ch, cw), crop in zip(found, expected, strict=True):
            assert torch.equal(position[..., top : top + ch, left : left + cw], crop), (h, w)


def test_a_cropped_resize_in_the_engine_equals_torchvisions():
    rng = np.random.default_rng(1)
    image = _image(rng, 70, 130)
    array = np.array(image)
    crops = [(0, 0, 70, 65), (0, 65, 70, 65), (3, 100, 67, 30), (10, 20, 7, 9), (0, 0, 70, 130)]
    size = (48, 40)
    resizes = np.array(
        [(0, -1, *size, *crop) for crop in crops] + [(0, -1, *size, -1, -1, -1, -1)],
        dtype=np.int64,
    )
    tiles = np.zeros((len(resizes), 5), dtype=np.int64)
    tiles[:, 0] = tiles[:, 3] = np.arange(len(resizes))
    table = np.tile(np.arange(256, dtype=np.float32), 3)
    for source in (array, engine_pixels(image)):  # (H, W, 3) and a PIL image's own RGBX
        out = np.full((len(resizes), 3, *size), np.nan, dtype=np.float32)
        engine.write_tiles(
            [source], resizes, tiles, out, table, np.zeros(3, np.float32), "bilinear"
        )
        chw = torch.from_numpy(array).permute(2, 0, 1)
        for k, (top, left, ch, cw) in enumerate([*crops, (0, 0, 70, 130)]):
            want = tvF.resize(
                chw[:, top : top + ch, left : left + cw],
                list(size),
                interpolation=tvF.InterpolationMode.BILINEAR,
                antialias=True,
            )
            assert torch.equal(torch.from_numpy(out[k]), want.float()), k
    bad = resizes.copy()
    bad[1, 5] = 120  # 65 columns from column 120 of 130
    with pytest.raises(EngineError, match=r"resizes\[1\] crops 70 × 65 at \(0, 120\)"):
        engine.write_tiles([array], bad, tiles, out, table, np.zeros(3, np.float32), "bilinear")
    bad = resizes.copy()
    bad[2, 6] = -2
    with pytest.raises(EngineError, match=r"resizes\[2\]\[6\] must be >= 0"):
        engine.write_tiles([array], bad, tiles, out, table, np.zeros(3, np.float32), "bilinear")


# --------------------------------------------------------------------------- encoding


def _samples(rng: np.random.Generator) -> tuple[list[str], list[list[Image.Image]]]:
    """Landscape and portrait beyond the ratio, a square below it, images below the
    minimum crop size, several images a sample, samples without images."""
    images = [
        [_image(rng, 300, 900)],  # landscape: 3 crops
        [],
        [_image(rng, 900, 300), _image(rng, 250, 260), _image(rng, 100, 700)],
        [_image(rng, 1000, 1001), _image(rng, 600, 1400), _image(rng, 257, 530)],
        [_image(rng, 40, 30)],
        [],
    ]
    texts = [
        f"look {BOI} here",
        "no image at all",
        f"{BOI} first{BOI}{BOI} then",
        f"{BOI} and {BOI}\n{BOI}",
        f"tiny {BOI}",
        "text only again",
    ]
    return texts, images


def test_encoding_equals_the_processor_call():
    processor = _panning()
    texts, images = _samples(np.random.default_rng(2))
    fast = fast_encoding(processor, texts, images, add_special_tokens=False)
    slow = _processor_call(processor, texts, images)
    assert fast is not None
    assert_same_batch(fast, slow)
    # Frames per image: 300 x 900 and 900 x 300 cut in 3; 250 x 260 and 1000 x 1001 below
    # the ratio; 100 x 700's crops would be below the minimum size; 600 x 1400 and
    # 257 x 530 cut in 2; 40 x 30 tiny.
    assert fast["pixel_values"].shape[0] == sum([4, 4, 1, 1, 1, 3, 3, 1])
    assert (fast["token_type_ids"] == 1).sum() == 256 * fast["pixel_values"].shape[0]


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_half_precision_pixels_equal_the_cast_processor_output(dtype):
    processor = _panning()
    texts, images = _samples(np.random.default_rng(3))
    fast = fast_encoding(processor, texts, images, pixel_dtype=dtype, add_special_tokens=False)
    slow = _processor_call(processor, texts, images)
    assert fast is not None and fast["pixel_values"].dtype == dtype
    assert torch.equal(fast["pixel_values"], slow["pixel_values"].to(dtype))


def test_other_settings_equal_the_processor_call():
    processor = _panning(
        pan_and_scan_min_crop_size=64,
        pan_and_scan_max_num_crops=3,
        pan_and_scan_min_ratio_to_activate=1.5,
    )
    texts, images = _samples(np.random.default_rng(4))
    fast = fast_encoding(processor, texts, images, add_special_tokens=False)
    assert fast is not None
    assert_same_batch(fast, _processor_call(processor, texts, images))


def test_the_processor_levels_default_wins_over_the_image_processors_attribute():
    """``Gemma3Processor.images_kwargs`` passes ``do_pan_and_scan=False`` to its image
    processor on every call: the image processor's own ``do_pan_and_scan=True`` does not
    pan and scan, and the fast path (taken) writes one frame per image, as the call does."""
    processor = gemma3_processor()
    processor.image_processor.do_pan_and_scan = True
    plan = fast_plan(processor)
    assert plan is not None and plan.pan_and_scan is None
    texts, images = ([f"{BOI} wide"], [[_image(np.random.default_rng(5), 100, 500)]])
    fast = fast_encoding(processor, texts, images, add_special_tokens=False)
    assert fast is not None and fast["pixel_values"].shape[0] == 1
    assert_same_batch(fast, _processor_call(processor, texts, images))


def test_published_size():
    processor = _panning(896)
    rng = np.random.default_rng(6)
    texts = [f"{BOI} a", "b", f"c {BOI}"]
    images = [[_image(rng, 896, 1344)], [], [_image(rng, 1200, 500)]]
    fast = fast_encoding(processor, texts, images, add_special_tokens=False)
    assert fast is not None and fast["pixel_values"].shape == (3 + 3, 3, 896, 896)
    assert_same_batch(fast, _processor_call(processor, texts, images))


# --------------------------------------------------------------------------- collate


def _examples(rng: np.random.Generator, sizes: list[list[tuple[int, int]]]) -> list[dict]:
    examples = []
    for i, sample in enumerate(sizes):
        content = [{"type": "image", "image": _image(rng, h, w)} for h, w in sample]
        messages = [user(*content, f"What is in picture {i}?"), assistant(f"Answer {i}.")]
        if i % 2:
            messages += [user("And then?"), assistant("Nothing more.")]
        examples.append({"messages": messages})
    return examples


@pytest.mark.parametrize(
    "image_size, sizes",
    [
        (224, [[(300, 900)], [], [(900, 300), (250, 260)], [(100, 700), (600, 1400)], [(40, 30)]]),
        (896, [[(896, 1344)], [(500, 500)], []]),
    ],
)
def test_collate_takes_the_fast_path_and_equals_the_processor_path(
    image_size, sizes, monkeypatch, caplog
):
    processor = _panning(image_size)
    examples = _examples(np.random.default_rng(7), sizes)
    calls = processor_calls(monkeypatch, processor)
    with caplog.at_level(logging.INFO, logger="vlm_collate"):
        fast = VLMCollator(processor, shift=False)(examples)
    assert not calls and not _logged(caplog)  # the fast path made the batch
    slow = VLMCollator(processor, shift=False, fast_path=False)(examples)
    assert calls
    assert_same_batch(dict(fast), dict(slow))
    assert fast["pixel_values"].shape[0] > sum(map(len, sizes))  # crops were written
    assert (fast["labels"] != -100).any()


def test_packed_batches_write_the_crops_in_packed_order():
    """Inside ``PackedCollator`` the frames are written once, in the packed order (each
    document's image followed by its crops), and equal the processor path's batch."""
    processor = _panning()
    sizes = [[(300, 900)], [], [(900, 300), (250, 260)], [(100, 700), (600, 1400)], [(60, 80)]]
    examples = _examples(np.random.default_rng(10), sizes)
    fast = PackedCollator(processor, max_length=16384)(examples)
    slow = PackedCollator(processor, max_length=16384, fast_path=False)(examples)
    assert fast.report.documents == slow.report.documents
    order = [d[0] for d in fast.report.documents]
    assert order != sorted(order)  # reordered: the crops follow their documents
    keys = [k for k in slow if isinstance(slow[k], torch.Tensor)]
    assert_same_batch({k: fast[k] for k in keys}, {k: slow[k] for k in keys})


# --------------------------------------------------------------------------- fallbacks


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"pan_and_scan_min_crop_size": 0}, "min_crop_size=0"),
        ({"pan_and_scan_min_ratio_to_activate": 1.0}, None),  # reproduced
        ({"pan_and_scan_max_num_crops": None}, "_merge_kwargs fails"),  # so does its call
    ],
)
def test_settings_it_does_not_reproduce_fall_back_logged_once(change, reason, caplog):
    processor = _panning(**change)
    texts, images = ([f"{BOI} x"], [[_image(np.random.default_rng(8), 300, 900)]])
    with caplog.at_level(logging.INFO, logger="vlm_collate"):
        first, second = (fast_encoding(processor, texts, images) for _ in range(2))
    logged = _logged(caplog)
    if reason is None:
        assert first is not None and second is not None and not logged
        return
    assert first is None and second is None
    assert len(logged) == 1 and reason in logged[0], logged


def test_a_replaced_replace_image_token_falls_back(caplog):
    processor = _panning()
    processor.replace_image_token = processor.replace_image_token
    with caplog.at_level(logging.INFO, logger="vlm_collate"):
        assert fast_plan(processor) is None
    assert "replace_image_token is replaced on the instance" in _logged(caplog)[0]


def test_an_empty_crop_calls_the_processor():
    """Settings that cut an empty last crop: the processor fails on it, so the fast path
    leaves the batch to it (its error is the one reported)."""
    processor = _panning(pan_and_scan_min_crop_size=1, pan_and_scan_max_num_crops=9)
    settings = fast_plan(processor).pan_and_scan
    assert pan_and_scan_crops(1, 9, settings) == [(0, 0, 1, 1), (0, 1, 1, 1)] + [
        (0, k, 1, 1) for k in range(2, 9)
    ]
    processor = _panning(pan_and_scan_min_crop_size=1, pan_and_scan_max_num_crops=4)
    settings = fast_plan(processor).pan_and_scan
    assert pan_and_scan_crops(1, 9, settings) is None  # 4 crops of 3 columns: the last empty
    texts, images = ([f"{BOI} x"], [[_image(np.random.default_rng(9), 1, 9)]])
    assert fast_encoding(processor, texts, images) is None
