"""egs/librispeech stage 1 on a tiny corpus in LibriSpeech's layout, made by the test."""

import numpy as np
import pytest
import soundfile

from conftest import run_script
from sofa_speechlm.data import DataDir, DataDirError
from sofa_speechlm.data.librispeech import prepare_librispeech
from sofa_speechlm.data.validate import validate_data_dir


def make_librispeech(root, subsets=("train-clean-100", "dev-clean", "test-clean")):
    for offset, subset in enumerate(subsets):
        for speaker in (100 + offset, 200 + offset):
            chapter = root / subset / str(speaker) / "7"
            chapter.mkdir(parents=True)
            lines = []
            for utt in range(2):
                utt_id = f"{speaker}-7-{utt:04d}"
                soundfile.write(str(chapter / f"{utt_id}.flac"), 0.1 * np.sin(np.arange(4000 + utt) / 5), 16000)
                lines.append(f"{utt_id} WORDS OF {speaker} NUMBER {utt}")
            (chapter / f"{speaker}-7.trans.txt").write_text("\n".join(lines) + "\n")
    return root


def test_prepares_every_task_dir_from_the_corpus_layout(tmp_path):
    corpus = make_librispeech(tmp_path / "LibriSpeech")
    lm_text = tmp_path / "lm.txt"
    lm_text.write_text("".join(f"SENTENCE NUMBER {n}\n" for n in range(50)))
    prepare_librispeech(corpus, tmp_path / "data", 16000, ["train-clean-100"], "dev-clean", "test-clean", lm_text=str(lm_text), num_lm_sentences=10, seed=1)
    asr = DataDir(tmp_path / "data" / "train" / "asr")
    assert asr.utt_ids == ["100-7-0000", "100-7-0001", "200-7-0000", "200-7-0001"]
    assert asr.text["200-7-0001"] == "WORDS OF 200 NUMBER 1"
    assert asr.table("utt2num_samples")["100-7-0001"] == "4001"
    assert len(DataDir(tmp_path / "data" / "train" / "textlm").utt_ids) == 10
    assert DataDir(tmp_path / "data" / "test" / "textlm").text == DataDir(tmp_path / "data" / "test" / "asr").text
    assert validate_data_dir(tmp_path / "data" / "dev" / "tts", fs=16000, require=("wav.scp", "text")) == []


def test_missing_subset_and_audio_are_named(tmp_path):
    corpus = make_librispeech(tmp_path / "LibriSpeech", subsets=("train-clean-100", "dev-clean"))
    with pytest.raises(DataDirError, match="test-clean: no LibriSpeech subset here"):
        prepare_librispeech(corpus, tmp_path / "data", 16000, ["train-clean-100"], "dev-clean", "test-clean")
    make_librispeech(tmp_path / "L2")
    (tmp_path / "L2" / "dev-clean" / "101" / "7" / "101-7-0001.flac").unlink()
    with pytest.raises(DataDirError, match=r"101-7.trans.txt:2: audio .*101-7-0001.flac not found"):
        prepare_librispeech(tmp_path / "L2", tmp_path / "data", 16000, ["train-clean-100"], "dev-clean", "test-clean")
    assert not (tmp_path / "data" / "train").exists()


def test_recipe_stage1_runs_from_its_directory(repo, tmp_path, shell_env):
    corpus = make_librispeech(tmp_path / "LibriSpeech")
    recipe = repo / "egs" / "librispeech" / "speechlm1"
    env = dict(shell_env, LIBRISPEECH=str(corpus))
    run_script([recipe / "run.sh", "--stop_stage", "1", "--datadir", tmp_path / "data", "--expdir", tmp_path / "exp"], recipe, env, check=True)
    assert validate_data_dir(tmp_path / "data" / "train" / "asr", fs=16000, require=("wav.scp", "text")) == []
