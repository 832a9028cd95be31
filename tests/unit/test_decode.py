"""A batch's image files decoded on a thread pool: the same batch as sequential loading,
decoded on several threads outside DataLoader workers (one inside), and the first
failing sample in batch order named, as sequentially."""

from __future__ import annotations

import threading

import pytest
import torch

from helpers import make_image, one_turn, png_bytes
from vlm_collate import qwen2_5_collate_fn
from vlm_collate.errors import CollateError
from vlm_collate.pipeline import decode
from vlm_collate.pipeline.encode import loaded_media


def _file_examples(tmp_path, n: int = 6) -> list[dict]:
    """``n`` samples: even ones hold a PNG file path, odd ones PNG bytes."""
    out = []
    for i in range(n):
        image = make_image(40 + 8 * i, 36, seed=i)
        if i % 2:
            value = png_bytes(image)
        else:
            value = tmp_path / f"{i}.png"
            image.save(value)
            value = str(value)
        out.append(one_turn(f"What is {i}?", images=[value]))
    return out


def test_the_batch_equals_sequential_loading(tmp_path, qwen_processor, monkeypatch):
    examples = _file_examples(tmp_path)
    parallel = qwen2_5_collate_fn(examples, qwen_processor, base_dir=tmp_path)
    monkeypatch.setattr(decode, "decode_threads", lambda n: 1)
    sequential = qwen2_5_collate_fn(examples, qwen_processor, base_dir=tmp_path)
    assert set(parallel) == set(sequential)
    for key, value in sequential.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(parallel[key], value), key


def _thread_names(examples, threads, monkeypatch) -> set[str]:
    """Names of the threads that loaded ``examples``; with a pool, the first two loads
    wait for each other (a barrier), so the test cannot pass or fail by timing: two loads
    can only meet if two threads run them at once."""
    names = set()
    meet = threading.Barrier(2, timeout=30) if threads > 1 else None
    calls = iter(range(len(examples)))
    lock = threading.Lock()

    def load(*args):
        names.add(threading.current_thread().name)
        with lock:
            call = next(calls)
        if meet is not None and call < 2:
            meet.wait()  # raises BrokenBarrierError if no second thread ever comes
        return loaded_media(*args)

    monkeypatch.setattr(decode, "_threads", lambda: threads)
    conversations = [e["conversation"] for e in examples]
    media = decode.loaded_batch(
        load, examples, conversations, list(range(len(examples))), _Takes(), None
    )
    assert [m.images[0].size for m in media] == [(40 + 8 * i, 36) for i in range(len(examples))]
    return names


class _Takes:
    """A profile that takes images, without limits (what loaded_media reads)."""

    image_limits: dict = {}

    def takes(self, kind):
        return kind == "image"


def test_files_are_decoded_on_several_threads_and_one_in_a_worker(tmp_path, monkeypatch):
    examples = _file_examples(tmp_path)
    for e in examples:  # absolute paths, as base_dir=None reads them
        item = e["conversation"][0]["content"][0]
        if isinstance(item["image"], str):
            item["image"] = str(tmp_path / item["image"])
    many = _thread_names(examples, 4, monkeypatch)
    assert len(many) > 1 and all(n.startswith("vlm_collate-decode") for n in many)
    one = _thread_names(examples, 1, monkeypatch)  # a DataLoader worker: _threads() is 1
    assert one == {threading.current_thread().name}


def test_decoded_images_need_no_pool(monkeypatch):
    examples = [one_turn("x", images=[make_image(30, 30, seed=i)]) for i in range(4)]
    assert sum(decode._decodes(e["conversation"], i) for i, e in enumerate(examples)) == 0


def test_the_first_failing_sample_in_batch_order_is_named(tmp_path, qwen_processor):
    examples = _file_examples(tmp_path)
    examples[3]["conversation"][0]["content"][0]["image"] = b"not an image at all"
    examples[5]["conversation"][0]["content"][0]["image"] = b"also not an image"
    with pytest.raises(CollateError, match="sample 3"):
        qwen2_5_collate_fn(examples, qwen_processor, base_dir=tmp_path)
