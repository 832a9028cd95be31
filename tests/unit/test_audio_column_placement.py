"""An audio column (issue 20 item 3 regression, formats): one ``(array, rate)`` pair is one
audio; a column with no audio item and no ``<audio>`` tag is left to the family that reads
it (Phi-4-multimodal, tests/families/test_family_phi4_mm.py) and refused by the others."""

from __future__ import annotations

import pytest

from vlm_collate.errors import SampleError
from vlm_collate.families.qwen3_omni import qwen3_omni_collate_fn
from vlm_collate.formats.content import media_columns
from vlm_collate.testing import qwen3_omni_processor, waveform


def test_a_waveform_pair_is_one_audio_and_a_list_of_pairs_is_several():
    wave = waveform(0.5)
    assert len(media_columns({"audio": (wave, 16_000)}, 0)["audio"][1]) == 1
    assert len(media_columns({"audio": [(wave, 16_000)]}, 0)["audio"][1]) == 1
    assert len(media_columns({"audios": [(wave, 16_000), (wave, 8_000)]}, 0)["audio"][1]) == 2
    assert len(media_columns({"audios": [wave, wave]}, 0)["audio"][1]) == 2


def test_an_unplaced_audio_column_is_refused_naming_the_sample():
    row = {
        "messages": [
            {"role": "user", "content": "Transcribe."},
            {"role": "assistant", "content": "hello"},
        ],
        "audio": {"array": waveform(0.5), "sampling_rate": 16_000},
    }
    ok = {"messages": [row["messages"][0], row["messages"][1]]}
    with pytest.raises(SampleError, match=r"sample 1: its 'audio' column holds 1 audio\(s\)"):
        qwen3_omni_collate_fn([ok, row], qwen3_omni_processor())
