"""run.sh stage 2c (tokenizer PTQ) on a tiny fairseq-layout HuBERT and a few seconds of audio:
the quantized tokenizer's report and the re-extracted test units, a rerun skipped by the
marker, changed test audio redoing it, options run.sh sets itself refused in
--tokenizer_ptq_opts, and the MFCC tokenizer's 'does not apply'."""

from __future__ import annotations

import json

from sofa_speechlm.data import read_table
from sofa_speechlm.speech.units import read_units
from sofa_speechlm.vocoder import CodeHiFiGANGenerator, save_published
from test_units_hubert import write_fairseq_checkpoint
from test_units_stage2 import ROOT, run_stage2, write_corpus
from units_testutils import tiny_hubert
from vocoder_testutils import tiny_config

import subprocess

PTQ = ["--tokenizer_ptq", "stablequant:W8A8", "--tokenizer_ptq_opts", "--p_max 0.5 --p_step 0.25 --bins 128 --timing_repeats 1"]


def hubert_options(tmp_path):
    return ["--hubert_ckpt", str(tmp_path / "hubert.pt"), "--layer", "2", *PTQ]


def test_stage2c_quantizes_the_tokenizer_and_reextracts_the_test_units(tmp_path):
    save_published(CodeHiFiGANGenerator(tiny_config(num_embeddings=8)), tmp_path / "vocoder" / "generator.pth")
    write_fairseq_checkpoint(tiny_hubert(layers=2), tmp_path / "hubert.pt")
    write_corpus(tmp_path / "corpus_a", tmp_path / "data", count=4, seconds=0.6)  # train: 2.6 s of calibration audio
    log = run_stage2(tmp_path, *hubert_options(tmp_path))
    assert "Stage 2c: stablequant W8A8 (all) of the HuBERT tokenizer" in log
    exp = tmp_path / "exp" / "tokenizer_ptq" / "stablequant_w8a8"
    report = json.loads((exp / "report.json").read_text())
    (row,) = report["rows"]
    assert (row["method"], row["setting"], row["scope"]) == ("stablequant", "W8A8", "all")
    assert report["p_max"] == 0.5 and report["p_step"] == 0.25 and report["bins"] == 128  # --tokenizer_ptq_opts got through
    assert set(row["p_curve"]) <= {"0.0", "0.25", "0.5"} and row["test_uer"] is not None
    assert "| all | W8A8 | stablequant |" in (exp / "report.md").read_text()
    assert (exp / "stablequant_w8a8_all" / ".done").is_file()
    units_dir = tmp_path / "dump" / "tokenizer_ptq" / "stablequant_w8a8" / "test"
    for task in ("speechlm", "asr"):
        units = read_units(units_dir / task, num_embeddings=8)  # the units format of design.md, ids below K
        fp_units = read_units(tmp_path / "data" / "test" / task)
        assert sorted(units) == sorted(read_table(tmp_path / "data" / "test" / task / "wav.scp"))
        assert {utt: len(seq) for utt, seq in units.items()} == {utt: len(seq) for utt, seq in fp_units.items()}
    assert (units_dir / "asr" / "text").is_file()  # stage 6 makes LM text of it
    first_units = (units_dir / "asr" / "units").read_text()

    # nothing changed: stage 2c is skipped by its marker
    log = run_stage2(tmp_path, *hubert_options(tmp_path))
    assert "Stage 2c: " in log and "already done; skipping" in log and "of the HuBERT tokenizer ->" not in log

    # other test audio: the test units and stage 2c are redone (k-means and the train units are not)
    write_corpus(tmp_path / "corpus_b", tmp_path / "data", splits=("test",), count=3, seconds=0.8)
    log = run_stage2(tmp_path, *hubert_options(tmp_path))
    assert "already trained on this train audio" in log and "of the HuBERT tokenizer ->" in log
    assert len(read_units(units_dir / "asr")) == 3 and (units_dir / "asr" / "units").read_text() != first_units

    # an option that run.sh sets itself is refused in --tokenizer_ptq_opts, by name
    command = ["./run.sh", "--stage", "2", "--stop_stage", "2", "--datadir", str(tmp_path / "data"),
               "--dumpdir", str(tmp_path / "dump"), "--expdir", str(tmp_path / "exp"), "--nj", "1", "--nclusters", "8",
               "--vocoder_file", str(tmp_path / "vocoder" / "generator.pth"), "--hubert_ckpt", str(tmp_path / "hubert.pt"),
               "--layer", "2", "--tokenizer_ptq", "max:W8A8", "--tokenizer_ptq_opts", "--scope transformer"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode != 0 and "--tokenizer_ptq_opts: --scope is set by run.sh" in result.stderr


def test_mfcc_tokenizer_ptq_does_not_apply_and_stage2_goes_on(tmp_path):
    save_published(CodeHiFiGANGenerator(tiny_config(num_embeddings=8)), tmp_path / "vocoder" / "generator.pth")
    write_corpus(tmp_path / "corpus", tmp_path / "data", count=3)
    log = run_stage2(tmp_path, *PTQ)
    assert "Stage 2c: --tokenizer_ptq does not apply to MFCC features (no --hubert_ckpt); going on without it" in log
    assert "Stage 2b: vocoder in" in log and (tmp_path / "data" / "test" / "asr" / "units").is_file()
    assert not (tmp_path / "exp" / "tokenizer_ptq").exists() and not (tmp_path / "dump" / "tokenizer_ptq").exists()
