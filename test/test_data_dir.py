"""Data dir validation names file, line and reason; split/combine/subset/fix keep dirs valid."""

import numpy as np
import pytest
import soundfile

from sofa_speechlm.bin import data_dir as data_dir_cli
from sofa_speechlm.data import DataDir, DataDirError, iter_utterances, load_audio, read_table
from sofa_speechlm.data.ops import choose_utterances, combine_data_dirs, fix_data_dir, split_data_dir, subset_data_dir
from sofa_speechlm.data.validate import validate_data_dir

FS = 16000


def make_dir(root, utterances=(("spk1-a", "HELLO THERE"), ("spk1-b", "GOOD MORNING"), ("spk2-c", "SEE YOU"))):
    root.mkdir(parents=True, exist_ok=True)
    wav_lines, text_lines, spk_lines, len_lines = [], [], [], []
    for index, (utt_id, words) in enumerate(utterances):
        wav = root / "wav" / f"{utt_id}.wav"
        wav.parent.mkdir(exist_ok=True)
        samples = 1600 * (index + 1)
        soundfile.write(str(wav), 0.1 * np.sin(np.arange(samples) / 7.0), FS, subtype="PCM_16")
        wav_lines.append(f"{utt_id} {wav}")
        text_lines.append(f"{utt_id} {words}")
        spk_lines.append(f"{utt_id} {utt_id.split('-')[0]}")
        len_lines.append(f"{utt_id} {samples}")
    for name, lines in [("wav.scp", wav_lines), ("text", text_lines), ("utt2spk", spk_lines), ("utt2num_samples", len_lines)]:
        (root / name).write_text("\n".join(lines) + "\n")
    (root / "spk2utt").write_text("spk1 spk1-a spk1-b\nspk2 spk2-c\n")
    return root


def problems_of(path, **kwargs):
    return "\n".join(validate_data_dir(path, fs=FS, **kwargs))


def test_valid_dir_has_no_problems(tmp_path):
    assert validate_data_dir(make_dir(tmp_path / "d"), fs=FS, require=("wav.scp", "text")) == []


def test_missing_required_file(tmp_path):
    path = make_dir(tmp_path / "d")
    (path / "text").unlink()
    assert "required file text is missing" in problems_of(path, require=("text",))


def test_unsorted_ids_name_the_line(tmp_path):
    path = make_dir(tmp_path / "d")
    (path / "text").write_text("spk1-b GOOD MORNING\nspk1-a HELLO THERE\nspk2-c SEE YOU\n")
    assert f"{path / 'text'}:2: not sorted: spk1-a comes after spk1-b" in problems_of(path)


def test_duplicated_ids(tmp_path):
    path = make_dir(tmp_path / "d")
    (path / "utt2spk").write_text("spk1-a spk1\nspk1-a spk1\nspk1-b spk1\nspk2-c spk2\n")
    assert f"{path / 'utt2spk'}:2: duplicated id spk1-a" in problems_of(path)


def test_id_missing_from_one_file(tmp_path):
    path = make_dir(tmp_path / "d")
    (path / "text").write_text("spk1-a HELLO THERE\nspk2-c SEE YOU\n")
    assert f"{path / 'text'}: utterance spk1-b of utt2spk is missing" in problems_of(path)


def test_wav_path_that_does_not_exist(tmp_path):
    path = make_dir(tmp_path / "d")
    (path / "wav" / "spk1-b.wav").unlink()
    assert f"{path / 'wav.scp'}:2: wav path of spk1-b does not exist" in problems_of(path)


def test_unreadable_and_empty_audio(tmp_path):
    path = make_dir(tmp_path / "d")
    (path / "wav" / "spk1-a.wav").write_bytes(b"RIFF garbage that is no wav at all")
    soundfile.write(str(path / "wav" / "spk2-c.wav"), np.zeros(0), FS, subtype="PCM_16")
    problems = problems_of(path)
    assert f"{path / 'wav.scp'}:1: spk1-a:" in problems and "unreadable audio" in problems
    assert f"{path / 'wav.scp'}:3: spk2-c: empty audio" in problems


def test_sample_rate_other_than_the_recipe(tmp_path):
    path = make_dir(tmp_path / "d")
    soundfile.write(str(path / "wav" / "spk1-b.wav"), np.zeros(3200), 8000, subtype="PCM_16")
    assert "spk1-b: sample rate 8000 Hz, the recipe expects 16000 Hz" in problems_of(path)


def test_non_utf8_text(tmp_path):
    path = make_dir(tmp_path / "d")
    (path / "text").write_bytes(b"spk1-a HELLO\nspk1-b CAF\xe9\nspk2-c SEE YOU\n")
    assert f"{path / 'text'}:2: not valid UTF-8" in problems_of(path)


def test_empty_transcript(tmp_path):
    path = make_dir(tmp_path / "d")
    (path / "text").write_text("spk1-a HELLO THERE\nspk1-b\nspk2-c SEE YOU\n")
    assert f"{path / 'text'}:2: empty transcript for spk1-b" in problems_of(path)


def test_cli_exit_status_and_listing(tmp_path, capsys):
    path = make_dir(tmp_path / "d")
    assert data_dir_cli.main(["validate", "--fs", str(FS), str(path)]) == 0
    (path / "utt2spk").write_text("spk2-c spk2\nspk1-a spk1\n")
    assert data_dir_cli.main(["validate", "--fs", str(FS), str(path)]) == 1
    err = capsys.readouterr().err
    assert "not sorted" in err and "spk1-b" in err


def test_split_subset_combine_round_trip(tmp_path):
    path = make_dir(tmp_path / "d")
    parts = split_data_dir(path, 2)
    assert [DataDir(part).utt_ids for part in parts] == [["spk1-a"], ["spk1-b", "spk2-c"]]
    assert all(validate_data_dir(part, fs=FS) == [] for part in parts)
    assert [DataDir(part).utt_ids for part in split_data_dir(path, 2, per_speaker=True)] == [["spk1-a", "spk1-b"], ["spk2-c"]]
    combine_data_dirs(tmp_path / "combined", parts)
    for name in ("wav.scp", "text", "utt2spk", "spk2utt", "utt2num_samples"):
        assert (tmp_path / "combined" / name).read_text() == (path / name).read_text()
    subset_data_dir(path, tmp_path / "sub", choose_utterances(path, last=2))
    assert read_table(tmp_path / "sub" / "text") == {"spk1-b": "GOOD MORNING", "spk2-c": "SEE YOU"}
    assert (tmp_path / "sub" / "spk2utt").read_text() == "spk1 spk1-b\nspk2 spk2-c\n"
    with pytest.raises(ValueError, match="cannot split 3 utterances into 4 parts"):
        split_data_dir(path, 4)


def test_combine_rejects_conflicting_ids(tmp_path):
    first = make_dir(tmp_path / "a")
    second = make_dir(tmp_path / "b", utterances=(("spk1-a", "SOMETHING ELSE"),))
    with pytest.raises(DataDirError, match="id spk1-a differs"):
        combine_data_dirs(tmp_path / "c", [first, second])


def test_fix_sorts_and_intersects_keeping_a_backup(tmp_path):
    path = make_dir(tmp_path / "d")
    original = (path / "text").read_text()
    (path / "text").write_text("spk2-c SEE YOU\nspk1-a HELLO THERE\n")
    assert fix_data_dir(path) == 1
    assert validate_data_dir(path, fs=FS) == []
    assert DataDir(path).utt_ids == ["spk1-a", "spk2-c"]
    assert (path / ".backup" / "text").read_text() == "spk2-c SEE YOU\nspk1-a HELLO THERE\n" != original


def test_audio_reading_segments_pipes_and_resampling(tmp_path):
    path = make_dir(tmp_path / "d")
    whole = load_audio(str(path / "wav" / "spk1-b.wav"), FS)
    assert whole.dtype == np.float32 and len(whole) == 3200
    piped = load_audio(f"cat {path / 'wav' / 'spk1-b.wav'} |", FS)
    np.testing.assert_array_equal(piped, whole)
    assert abs(len(load_audio(str(path / "wav" / "spk1-b.wav"), 8000)) - 1600) <= 1
    (path / "segments").write_text("seg1 spk1-b 0.0 0.05\nseg2 spk1-b 0.1 0.2\n")
    (path / "wav.scp").write_text(f"spk1-b {path / 'wav' / 'spk1-b.wav'}\n")
    (path / "utt2spk").write_text("seg1 spk1\nseg2 spk1\n")
    pieces = dict(iter_utterances(path, FS))
    np.testing.assert_array_equal(pieces["seg2"], whole[1600:3200])
    assert len(pieces["seg1"]) == 800
