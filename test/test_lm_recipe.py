"""run.sh stage 4: statistics, long-line check, training, averaging, adapter merge, skipping finished experiments."""

import os
import subprocess
from pathlib import Path

import yaml

from sofa_speechlm.text.bpe import train_sentencepiece, write_token_list
from test_lm_espnet import write_lm_text

REPO = Path(__file__).resolve().parents[1]


def run_stage4(tmp_path: Path, *options: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = ["./run.sh", "--stage", "4", "--stop_stage", "4", "--dumpdir", str(tmp_path / "dump"),
               "--expdir", str(tmp_path / "exp"), "--nbpe", "60", *options]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)


def test_stage4_trains_merges_and_skips_when_finished(tmp_path):
    text_dir = tmp_path / "dump/lm_text"
    for split, count in (("train", 200), ("dev", 20)):
        (text_dir / split).mkdir(parents=True)
        write_lm_text(text_dir / split / "all.txt", count, seed=len(split))
        with open(text_dir / split / "all.txt", "a", encoding="utf-8") as stream:  # over the LM's 48 positions
            stream.write(f"utt_long_{split} <generatetext> {' '.join(['the cat sat on the mat'] * 12)}\n")
    token_dir = tmp_path / "dump/token_list/bpe_unigram60"
    write_token_list(train_sentencepiece(text_dir / "train/all.txt", token_dir, nbpe=60), token_dir / "tokens.txt")
    config = yaml.safe_load((REPO / "conf/lm/tiny_sofa_full.yaml").read_text())
    config["lm_conf"].update(finetune="lora", lora_conf=dict(rank=4, alpha=8))
    config["lm_conf"]["hf_config"]["max_position_embeddings"] = 48
    config.update(max_epoch=1, use_tensorboard=False, use_matplotlib=False)
    (tmp_path / "tiny_lora.yaml").write_text(yaml.safe_dump(config))

    options = ("--lm_configs", str(tmp_path / "tiny_lora.yaml"), "--lm_args", "--keep_nbest_models 2 --log_interval 7")
    first = run_stage4(tmp_path, *options)
    assert first.returncode == 0, first.stderr[-3000:]
    exp = tmp_path / "exp/lm_tiny_lora"
    trained = yaml.safe_load((exp / "config.yaml").read_text())  # --lm_args override the config's values
    assert (trained["keep_nbest_models"], trained["log_interval"]) == ([2], 7)
    for name in ("config.yaml", "valid.loss.ave.pth", "merged/config.yaml", "merged/model.pth"):
        assert (exp / name).is_file(), name
    assert yaml.safe_load((exp / "merged/config.yaml").read_text())["lm_conf"]["finetune"] == "full"
    for split in ("train", "valid"):  # the long line was dropped before ESPnet, reported with its id
        assert (exp / f"lm_text/{split}/long_lines").read_text().split()[0] == f"utt_long_{'dev' if split == 'valid' else 'train'}"
    assert "utt_long_train (" in first.stderr

    again = run_stage4(tmp_path, *options)
    assert again.returncode == 0 and "already trained; skipping" in again.stderr


def test_stage4_names_the_missing_stage3_output(tmp_path):
    result = run_stage4(tmp_path)
    assert result.returncode != 0
    assert f"Stage 4 needs {tmp_path}/dump/lm_text/train/all.txt (run stage 3 first)" in result.stderr
