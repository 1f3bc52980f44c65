"""run.sh stage 2: its markers hold checksums of the inputs, so another corpus redoes what
depends on it (k-means, units, vocoder) and nothing else; units never need a feature dump."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import soundfile

from sofa_speechlm.data import read_table, write_table
from sofa_speechlm.vocoder import CodeHiFiGANGenerator, save_published
from sofa_speechlm.vocoder.codebook import file_md5
from units_testutils import make_speech_dir
from vocoder_testutils import tiny_config

ROOT = Path(__file__).resolve().parents[1]
SPLITS, TASKS = ("train", "dev", "test"), ("speechlm", "asr", "tts")


def write_corpus(corpus: Path, datadir: Path, splits=SPLITS, count: int = 3, seconds: float = 0.5, silent=()) -> None:
    """Per split, `count` wavs under `corpus` shared by the speechlm/asr/tts data dirs under `datadir`;
    the first wav of the `silent` splits is all zeros."""
    for split in splits:
        wavs = make_speech_dir(corpus / split, count=count, seconds=seconds)
        if split in silent:
            soundfile.write(wavs[min(wavs)], np.zeros(8000, dtype=np.float32), 16000)
        for task in TASKS:
            target = datadir / split / task
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            for name in ("wav.scp", "utt2spk", "spk2utt") + (("text",) if task != "speechlm" else ()):
                write_table(target / name, read_table(corpus / split / name))


def run_stage2(tmp_path, *options):
    command = ["./run.sh", "--stage", "2", "--stop_stage", "2", "--datadir", str(tmp_path / "data"),
               "--dumpdir", str(tmp_path / "dump"), "--expdir", str(tmp_path / "exp"), "--nj", "1",
               "--nclusters", "8", "--vocoder_file", str(tmp_path / "vocoder" / "generator.pth"), *options]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result.stderr


def units_files(tmp_path):
    return {(split, task): (tmp_path / "data" / split / task / "units").read_text() for split in SPLITS for task in TASKS}


def test_another_corpus_redoes_what_depends_on_it_and_nothing_else(tmp_path):
    save_published(CodeHiFiGANGenerator(tiny_config(num_embeddings=8)), tmp_path / "vocoder" / "generator.pth")
    write_corpus(tmp_path / "corpus_a", tmp_path / "data", count=4, silent=("train", "test"))
    log = run_stage2(tmp_path)
    assert "k-means (K=8" in log and log.count("copying its units") == 6  # asr and tts share speechlm's audio
    for split in ("train", "test"):  # the silent utterance is listed and removed from the data dirs of its audio
        for task in TASKS:
            assert (tmp_path / "dump" / "units" / split / task / "bad_utts.txt").read_text() == "spk0-utt000 all 8000 samples are zero\n"
            assert "spk0-utt000" not in read_table(tmp_path / "data" / split / task / "wav.scp")
    assert (tmp_path / "dump" / "kmeans_sample" / "mfcc" / "speechlm" / "bad_utts.1.txt").read_text() == "spk0-utt000 all 8000 samples are zero\n"
    first = units_files(tmp_path)
    kmeans = tmp_path / "exp" / "kmeans" / "mfcc_km8" / "km.npy"
    assert json.loads((tmp_path / "exp" / "vocoder" / "kmeans.json").read_text())["md5"] == file_md5(kmeans)
    assert not list((tmp_path / "dump").rglob("*.ark"))  # no features of the corpus are kept

    # another corpus's dev split (new wav paths): only dev's units are redone
    write_corpus(tmp_path / "corpus_b", tmp_path / "data", splits=("dev",), count=4, seconds=0.4)
    log = run_stage2(tmp_path)
    assert "already trained on this train audio" in log and "vocoder" in log and "already done" in log
    assert "km.npy of dev/speechlm (1 jobs" in log and log.count("copying its units") == 2  # dev only
    second = units_files(tmp_path)
    for split in ("train", "test"):
        assert all(second[split, task] == first[split, task] for task in TASKS)
    assert second["dev", "speechlm"] != first["dev", "speechlm"] and len(second["dev", "speechlm"].splitlines()) == 4

    # another train split: k-means, every units file and the vocoder import are redone
    write_corpus(tmp_path / "corpus_c", tmp_path / "data", splits=("train",), count=4, seconds=0.7)
    log = run_stage2(tmp_path)
    assert "k-means (K=8" in log and "checking and importing the vocoder" in log
    assert "km.npy of train/speechlm dev/speechlm test/speechlm (1 jobs" in log
    assert json.loads((tmp_path / "exp" / "vocoder" / "kmeans.json").read_text())["md5"] == file_md5(kmeans)

    # nothing changed: everything is skipped
    log = run_stage2(tmp_path)
    assert "k-means (K=" not in log and "units with" not in log and "importing" not in log

    # a vocoder data dir of its own (--vocoder_data): it gets units of the same k-means model; nothing else is redone
    before = units_files(tmp_path)
    vocoder_data = tmp_path / "data" / "vocoder"
    make_speech_dir(vocoder_data, count=2, seconds=0.5)
    log = run_stage2(tmp_path, "--vocoder_data", "vocoder")
    assert "k-means (K=" not in log and "km.npy of vocoder (1 jobs" in log
    assert sorted(read_table(vocoder_data / "units")) == sorted(read_table(vocoder_data / "wav.scp"))
    assert units_files(tmp_path) == before
