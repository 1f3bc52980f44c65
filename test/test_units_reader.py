"""The one units reader (speech/units.py): a data dir's file or a units file, the same lists,
the unit-table check only where a table size is given, durations expanded."""

import pytest

from sofa_speechlm.data import DataDirError
from sofa_speechlm.speech.units import expand_by_durations, read_units, write_units


def test_data_dir_and_file_read_alike_and_range_is_checked_only_against_a_table(tmp_path):
    write_units(tmp_path, {"b": [250, 3, 3], "a": [0, 1, 1, 1]}, dedup=True)
    from_dir, from_file = read_units(tmp_path), read_units(tmp_path / "units")
    assert from_dir == from_file == {"a": [0, 1, 1, 1], "b": [250, 3, 3]}
    with pytest.raises(DataDirError, match=r"units: utterance b: unit id 250 at position 0 is outside \[0, 199\]"):
        read_units(tmp_path, num_embeddings=200)
    assert expand_by_durations(read_units(tmp_path, "units_dedup"), tmp_path / "units_dur") == from_dir


def test_durations_that_do_not_match_name_the_utterance(tmp_path):
    (tmp_path / "units_dur").write_text("a 2 1\n")
    with pytest.raises(DataDirError, match="units_dur: utterance a: expected 3 durations >= 1, got 2"):
        expand_by_durations({"a": [4, 5, 6]}, tmp_path / "units_dur")
    with pytest.raises(DataDirError, match="units_dur: no durations for utterance b"):
        expand_by_durations({"b": [1]}, tmp_path / "units_dur")
