"""PackedCollator never drops a media tensor: media rows it cannot split by document
(families without ``image_grid_thw``) are a clear error, not a batch without pixels."""

from __future__ import annotations

import pytest
from tests.helpers import make_image

from vlm_collate import PackedCollator
from vlm_collate.errors import CollateError
from vlm_collate.testing import families


def _rows(image: bool) -> list[dict]:
    content = [{"type": "text", "text": "What is this?"}]
    if image:
        content.insert(0, {"type": "image", "image": make_image(60, 80)})
    return [
        {"messages": [{"role": "user", "content": content}, {"role": "assistant", "content": "A"}]}
        for _ in range(3)
    ]


@pytest.mark.parametrize("builder", ["gemma3_processor", "internvl_processor"])
def test_media_rows_without_grids_are_an_error_naming_the_key(builder):
    collator = PackedCollator(getattr(families, builder)(), max_length=8192)
    with pytest.raises(CollateError, match="pixel_values"):
        collator(_rows(image=True))


def test_text_only_rows_of_such_a_family_still_pack():
    batch = PackedCollator(families.gemma3_processor(), max_length=8192)(_rows(image=False))
    assert "pixel_values" not in batch
    assert batch["input_ids"].shape[0] == 1
