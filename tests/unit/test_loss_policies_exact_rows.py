"""The run-time row check reaches the batch report: rows the marker path could not vouch
for (here a tool turn GLM-4.1V's template drops) are labelled by the exact path and named
in ``BatchReport.exact_rows`` by their input index, after dropped samples are taken out."""

from __future__ import annotations

from vlm_collate import VLMCollator
from vlm_collate.processor.markers import labels_plan
from vlm_collate.testing.families import glm4v_processor

PLAIN = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
TOOL = [
    {"role": "user", "content": "What is 6 times 7?"},
    {"role": "assistant", "content": "Let me compute."},
    {"role": "tool", "content": "42"},
    {"role": "assistant", "content": "It is 42."},
]
NO_REPLY = [{"role": "user", "content": "Nothing to answer."}]


def test_exact_rows_in_the_batch_report():
    processor = glm4v_processor()
    assert labels_plan(processor).method == "markers"
    collate = VLMCollator(processor, on_unlabeled="drop")
    batch = collate([{"messages": c} for c in (NO_REPLY, PLAIN, TOOL, PLAIN, TOOL)])
    report = batch.report
    assert [i for i, _ in report.dropped] == [0]
    assert report.exact_rows == [2, 4]  # input indices, not batch rows
    tokenizer = processor.tokenizer
    for row in (1, 3):  # batch rows of the tool conversations: both replies, no tool text
        text = tokenizer.decode([t for t in batch["labels"][row].tolist() if t != -100])
        assert "Let me compute." in text and "It is 42." in text and "42<" not in text
    plain = VLMCollator(processor)([{"messages": PLAIN}, {"messages": PLAIN}])
    assert plain.report.exact_rows == []
