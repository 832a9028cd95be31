"""Rows named: errors and the batch report name the dataset row when it carries an
identity (``id``, ``idx``, ``__key__``, ``__index__``); ``with_row_index`` adds one."""

from __future__ import annotations

import pytest

import vlm_collate as vc
from helpers import make_image
from vlm_collate.errors import CollateError, SampleError
from vlm_collate.formats.rows import row_id, where


def row(identity=None, key="id", reply="Yes.", image=True):
    r = {
        "messages": [
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Ok?"}]}
            if image
            else {"role": "user", "content": "Ok?"},
            {"role": "assistant", "content": reply},
        ],
    }
    if image:
        r["images"] = [make_image()]
    if identity is not None:
        r[key] = identity
    return r


def test_identity_keys_in_order():
    assert row_id({"id": "a", "idx": 3}) == "a"
    assert row_id({"idx": 3}) == 3
    assert row_id({"__key__": "shard-0/17"}) == "shard-0/17"
    assert row_id({"__index__": 9}) == 9
    assert row_id({"id": None, "messages": []}) is None
    assert where(5, {"id": "coco-0042"}) == "row 'coco-0042' (sample 5 of the batch)"
    assert where(5, {}) == "sample 5"


def test_a_pipeline_error_names_the_row(qwen_processor):
    """An error raised deep in the pipeline (no assistant turn, on_unlabeled='raise')
    names the dataset row, not only the position in the batch."""
    bad = {"__key__": "shard-3/0042", "messages": [{"role": "user", "content": "hi"}]}
    collator = vc.VLMCollator(qwen_processor, on_unlabeled="raise")
    with pytest.raises(
        SampleError, match=r"^row 'shard-3/0042' \(sample 1 of the batch\) has no assistant turn"
    ):
        collator([row("r0"), bad])


def test_a_media_error_names_the_row(qwen_processor, tmp_path):
    bad = row()
    bad["idx"] = 41
    bad["images"] = ["no-such-file.png"]
    with pytest.raises(CollateError, match=r"^row 41 \(sample 1 of the batch\), image 0: "):
        vc.VLMCollator(qwen_processor, base_dir=str(tmp_path))([row("ok"), bad])


def test_the_report_names_rows_and_dropped_rows(qwen_processor):
    long = row("too-long", reply="word " * 400)
    batch = vc.VLMCollator(qwen_processor, max_length=200, on_overflow="drop")(
        [row("short"), long, row()]
    )
    report = batch.report
    assert report.row_ids == ["short", "too-long", None]
    assert report.row(1) == "too-long"
    assert [r for r, _ in report.dropped_rows] == ["too-long"]
    assert "dropped rows: ['too-long']" in report.summary()


def test_with_row_index_on_a_list_and_an_iterable(qwen_processor):
    rows = [row(), row(reply="No.")]
    indexed = vc.with_row_index(rows, start=100)
    assert len(indexed) == 2 and indexed[1]["__index__"] == 101
    assert [r["__index__"] for r in indexed] == [100, 101]
    assert [r["__index__"] for r in vc.with_row_index(iter(rows))] == [0, 1]
    bad = {"messages": [{"role": "user", "content": "hi"}]}
    with pytest.raises(SampleError, match=r"^row 1 \(sample 1 of the batch\)"):
        vc.VLMCollator(qwen_processor, on_unlabeled="raise")(list(vc.with_row_index([row(), bad])))


def test_with_row_index_on_a_datasets_dataset(qwen_processor):
    datasets = pytest.importorskip("datasets")
    ds = datasets.Dataset.from_list(
        [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]}]
        * 3
    )
    indexed = vc.with_row_index(ds)
    assert indexed["__index__"] == [0, 1, 2]
    assert vc.with_row_index(indexed) is indexed
    stream = vc.with_row_index(ds.to_iterable_dataset())
    assert [r["__index__"] for r in stream] == [0, 1, 2]
    assert vc.VLMCollator(qwen_processor)([indexed[2]]).report.row_ids == [2]


def test_the_length_estimator_names_the_row(qwen_processor):
    with pytest.raises(SampleError, match=r"^row 'x' \(sample 3 of the batch\): .*no other"):
        vc.LengthEstimator(qwen_processor)({"id": "x", "text": "hi"}, 3)
