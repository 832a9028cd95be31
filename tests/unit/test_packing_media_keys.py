"""PackedCollator never drops a media tensor. Families whose ``pixel_values`` rows stand
for a fixed number of image tokens each (Gemma 3 per image, InternVL and Llama 4 per
tile) are packed with every document's rows in packed order; media it cannot split by
document are a clear error, not a batch without pixels."""

from __future__ import annotations

import pytest
import torch
from tests.helpers import make_image

from vlm_collate import PackedCollator, VLMCollator
from vlm_collate.errors import CollateError
from vlm_collate.testing import families


def _rows(sizes: list[list[tuple[int, int]]]) -> list[dict]:
    rows = []
    for i, images in enumerate(sizes):
        content = [
            {"type": "image", "image": make_image(w, h, seed=i * 7 + k)}
            for k, (w, h) in enumerate(images)
        ]
        content.append({"type": "text", "text": "What is this? " * (i + 1)})
        rows.append(
            {
                "messages": [
                    {"role": "user", "content": content},
                    {"role": "assistant", "content": f"Answer {i}."},
                ]
            }
        )
    return rows


SIZES = [[(60, 80)], [], [(300, 100), (50, 50)], [(1000, 200)]]


@pytest.mark.parametrize("builder", ["gemma3_processor", "internvl_processor", "llama4_processor"])
@pytest.mark.parametrize("fast_path", [True, False])
def test_each_documents_pixel_rows_follow_it_in_packed_order(builder, fast_path):
    processor = getattr(families, builder)()
    rows = _rows(SIZES)
    packed = PackedCollator(processor, max_length=16384, fast_path=fast_path)(rows)
    documents = packed.report.documents  # (input index, row, first column, columns), packed order
    assert [d[0] for d in documents] != sorted(d[0] for d in documents)  # reordered
    per_doc = []
    for index, *_ in documents:
        alone = VLMCollator(processor, fast_path=False)([rows[index]])
        if "pixel_values" in alone:
            per_doc.append(alone["pixel_values"])
    want = torch.cat(per_doc)
    assert packed["pixel_values"].shape == want.shape
    assert torch.equal(packed["pixel_values"].to(want.dtype), want)


@pytest.mark.parametrize("builder", ["pixtral_processor", "llava_onevision_processor"])
def test_media_it_cannot_split_by_document_are_an_error_naming_the_key(builder):
    collator = PackedCollator(getattr(families, builder)(), max_length=16384)
    with pytest.raises(CollateError, match="cannot lay out"):
        collator(_rows([[(60, 80)], [(40, 40)]]))


def test_text_only_rows_of_such_a_family_pack():
    batch = PackedCollator(families.pixtral_processor(), max_length=8192)(_rows([[], []]))
    assert "pixel_values" not in batch
    assert batch["input_ids"].shape[0] == 1
