"""run.sh stage 3 on data dirs with units: LM text, sentencepiece model and token list; reruns skip."""

from __future__ import annotations

import subprocess
from pathlib import Path

from sofa_speechlm.data import read_table
from sofa_speechlm.text import JointTokenizer, split_segments
from units_testutils import make_split

ROOT = Path(__file__).resolve().parents[1]


def run_stage3(tmp_path, *options):
    command = ["./run.sh", "--stage", "3", "--stop_stage", "3", "--datadir", str(tmp_path / "data"),
               "--dumpdir", str(tmp_path / "dump"), "--expdir", str(tmp_path / "exp"), "--nbpe", "50", *options]
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_stage3_writes_lm_text_bpe_and_token_list(tmp_path):
    units = {split: make_split(tmp_path / "data" / split) for split in ("train", "dev", "test")}
    result = run_stage3(tmp_path)
    assert result.returncode == 0, result.stderr
    lm_text = tmp_path / "dump" / "lm_text"
    for split in ("train", "dev", "test"):
        combined = read_table(lm_text / split / "all.txt")
        assert len(combined) == 5 + 3 * 4
        asr = read_table(lm_text / split / "asr.txt")
        for utt_id, ids in units[split].items():
            assert [s.units for s in split_segments(asr[utt_id])] == [ids, []]
    token_dir = tmp_path / "dump" / "token_list" / "bpe_unigram50"
    tokenizer = JointTokenizer(token_dir / "bpe.model", token_dir / "tokens.txt")
    assert len(tokenizer.tokens) == 50
    line = read_table(lm_text / "dev" / "tts.txt")[next(iter(units["dev"]))]
    assert tokenizer.detokenize(tokenizer.tokenize(line)) == line
    rerun = run_stage3(tmp_path)
    assert rerun.returncode == 0 and "already in" in rerun.stderr and "sentencepiece (" not in rerun.stderr


def test_stage3_without_units_fails_naming_the_data_dir(tmp_path):
    for split in ("train", "dev", "test"):
        make_split(tmp_path / "data" / split, with_units=False)
    result = run_stage3(tmp_path)
    assert result.returncode != 0
    assert "train/speechlm: no units file; run stage 2" in result.stderr
