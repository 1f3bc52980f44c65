"""Unit characters and task templates: invertible, and stage 3's LM text follows each template."""

from __future__ import annotations

import unicodedata

import pytest

from sofa_speechlm.bin import make_lm_text as make_lm_text_cli
from sofa_speechlm.data import DataDirError, read_table, write_table
from sofa_speechlm.speech.units import write_units
from sofa_speechlm.text.lm_text import task_lines
from sofa_speechlm.text import SPECIAL_TOKENS, chars_to_units, format_task, split_segments, units_to_chars
from sofa_speechlm.text.unit_chars import MAX_UNITS
from units_testutils import make_split


def test_unit_characters_round_trip_and_survive_nfkc():
    units = list(range(2000))
    chars = units_to_chars(units)
    assert len(chars) == len(units)
    assert chars_to_units(chars) == units
    assert unicodedata.normalize("NFKC", chars) == chars
    assert chars_to_units("a" + units_to_chars([5, 5, 0]) + " b") == [5, 5, 0]
    with pytest.raises(ValueError, match="unit id -1 cannot be written"):
        units_to_chars([-1])
    with pytest.raises(ValueError, match=f"unit id {MAX_UNITS} cannot be written"):
        units_to_chars([MAX_UNITS])


def test_templates_of_the_four_tasks():
    u = units_to_chars([1, 2, 3])
    assert format_task("textlm", text="HELLO  WORLD") == "<generatetext> HELLO WORLD"
    assert format_task("speechlm", units=[1, 2, 3]) == f"<generatespeech> {u}"
    assert format_task("asr", text="HI", units=[1, 2, 3]) == f"<startofspeech> {u} <generatetext> HI"
    assert format_task("tts", text="HI", units=[1, 2, 3]) == f"<startoftext> HI <generatespeech> {u}"
    segments = split_segments(format_task("tts", text="HI THERE", units=[7, 7, 9]))
    assert [(s.token, s.text, s.units) for s in segments] == [("<startoftext>", "HI THERE", []), ("<generatespeech>", "", [7, 7, 9])]


def test_template_errors_name_the_problem():
    with pytest.raises(ValueError, match="unknown task 'mt'"):
        format_task("mt", text="x")
    with pytest.raises(ValueError, match="task asr needs units"):
        format_task("asr", text="x")
    with pytest.raises(ValueError, match="text contains characters of the unit block"):
        format_task("textlm", text="中文")
    with pytest.raises(ValueError, match="text contains a special token"):
        format_task("textlm", text="a <generatetext> b")


def test_lm_text_follows_each_template(tmp_path):
    units = make_split(tmp_path / "data" / "train")
    make_lm_text_cli.main(["--split_dir", str(tmp_path / "data" / "train"), "--output_dir", str(tmp_path / "lm")])
    lm = {task: read_table(tmp_path / "lm" / f"{task}.txt") for task in ("textlm", "speechlm", "asr", "tts")}
    texts = read_table(tmp_path / "data" / "train" / "asr" / "text")
    assert lm["textlm"] == {f"text{i}": f"<generatetext> SOME TEXT LINE {i}" for i in range(5)}
    for utt_id, ids in units.items():
        chars = units_to_chars(ids)
        assert lm["speechlm"][utt_id] == f"<generatespeech> {chars}"
        assert lm["asr"][utt_id] == f"<startofspeech> {chars} <generatetext> {texts[utt_id]}"
        assert lm["tts"][utt_id] == f"<startoftext> {texts[utt_id]} <generatespeech> {chars}"
    combined = read_table(tmp_path / "lm" / "all.txt")
    assert len(combined) == 5 + 3 * 4
    assert all(combined[f"{task}_{utt_id}"] == line for task in lm for utt_id, line in lm[task].items())
    assert all(line.split()[0] in SPECIAL_TOKENS for line in combined.values())


def test_utterances_without_units_are_left_out(tmp_path, caplog):
    split = tmp_path / "train"
    units = make_split(split)
    dropped = sorted(units)[0]
    write_units(split / "asr", {utt_id: ids for utt_id, ids in units.items() if utt_id != dropped})
    make_lm_text_cli.main(["--split_dir", str(split), "--output_dir", str(tmp_path / "lm"), "--tasks", "asr"])
    assert sorted(read_table(tmp_path / "lm" / "asr.txt")) == sorted(units)[1:]
    assert "1 utterances have no units" in caplog.text


def test_data_dir_without_units_is_a_clear_error(tmp_path):
    make_split(tmp_path / "train", with_units=False)
    with pytest.raises(SystemExit, match=r"make_lm_text: error: .*train/speechlm: no units file; run stage 2"):
        make_lm_text_cli.main(["--split_dir", str(tmp_path / "train"), "--output_dir", str(tmp_path / "lm")])
    make_split(tmp_path / "again")
    text = read_table(tmp_path / "again" / "asr" / "text")
    write_table(tmp_path / "again" / "asr" / "text", dict(list(text.items())[1:]))
    with pytest.raises(DataDirError, match=f"asr/text: no text for utterance {next(iter(text))}"):
        task_lines(tmp_path / "again" / "asr", "asr")
