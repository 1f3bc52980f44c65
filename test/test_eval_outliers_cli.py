"""bin.outliers end to end on a tiny model and a made-up test set: tokenization as in training,
modalities, outliers.json and attention_maps.npz that bin.report reads."""

import argparse
import json
import random

import numpy as np
import pytest
import torch
from transformers import OPTConfig, OPTForCausalLM

from sofa_speechlm.bin import outliers as cli
from sofa_speechlm.text.bpe import train_sentencepiece, write_token_list
from sofa_speechlm.text.unit_chars import units_to_chars

WORDS = "the a cat dog sat ran on mat big small red blue".split()


def write_test_set(root):
    rng = random.Random(0)
    lines = {task: [] for task in ("textlm", "speechlm", "asr", "tts")}
    for i in range(12):
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 6)))
        units = units_to_chars(rng.randint(0, 15) for _ in range(rng.randint(5, 12)))
        lines["textlm"].append(f"t{i:02d} <generatetext> {text}")
        lines["speechlm"].append(f"s{i:02d} <generatespeech> {units}")
        lines["asr"].append(f"a{i:02d} <startofspeech> {units} <generatetext> {text}")
        lines["tts"].append(f"b{i:02d} <startoftext> {text} <generatespeech> {units}")
    root.mkdir()
    for task, entries in lines.items():
        (root / f"{task}.txt").write_text("\n".join(entries) + "\n", encoding="utf-8")
    everything = root.parent / "all.txt"
    everything.write_text("".join((root / f"{t}.txt").read_text() for t in lines), encoding="utf-8")
    return everything


@pytest.fixture
def fake_experiment(tmp_path, monkeypatch):
    everything = write_test_set(tmp_path / "lm_text")
    bpemodel = train_sentencepiece(everything, tmp_path / "bpe", nbpe=60)
    tokens = write_token_list(bpemodel, tmp_path / "tokens.txt")
    train_args = argparse.Namespace(bpemodel=str(bpemodel), token_list=tokens, lm_conf={"attention": "softmax", "finetune": "full"},
                                    finetune="lora")
    torch.manual_seed(0)
    model = OPTForCausalLM(OPTConfig(vocab_size=len(tokens), hidden_size=32, word_embed_proj_dim=32, num_hidden_layers=2,
                                     num_attention_heads=4, ffn_dim=64, max_position_embeddings=256, dropout=0.0)).eval()
    monkeypatch.setattr(cli, "load_model", lambda exp_dir, ptq_dir, device: (model, train_args, "fp", "fp"))
    return tmp_path


def test_outliers_cli_writes_stats_and_attention_maps(fake_experiment):
    out = fake_experiment / "exp/lm_tiny_vanilla_full/eval/fp"
    cli.main(["--exp_dir", str(fake_experiment / "exp/lm_tiny_vanilla_full"), "--output_dir", str(out),
              "--lm_text_dir", str(fake_experiment / "lm_text"), "--num_sequences", "6", "--batch_size", "4"])
    result = json.loads((out / "outliers.json").read_text())
    assert result["lm"] == "lm_tiny_vanilla_full" and result["variant"] == "fp" and result["attention"] == "softmax"
    assert result["finetune"] == "lora"  # as trained, not the merged export's "full"
    assert {m: s["sequences"] for m, s in result["sources"].items()} == {"text": 6, "speech": 6, "speech+text": 6}
    for modality in ("text", "speech", "speech+text"):
        assert len(result["per_layer"][modality]["max_inf_norm"]) == 2
        assert result["summary"][modality]["max_inf_norm"] > 0
    tasks = result["attention_maps"]["tasks"]
    assert set(tasks) == {"textlm", "speechlm", "asr", "tts"}
    assert tasks["asr"]["tokens"][:2] == ["<sos/eos>", "<startofspeech>"]
    with np.load(out / result["attention_maps"]["file"]) as maps:
        asr = maps["asr"]
        assert asr.shape == (len(tasks["asr"]["tokens"]),) * 2
        assert asr.sum(axis=1) == pytest.approx(np.ones(len(asr)), abs=1e-4)


def test_outliers_cli_without_test_text_names_the_dir(fake_experiment):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        cli.main(["--exp_dir", "x", "--output_dir", str(fake_experiment / "o"), "--lm_text_dir", str(fake_experiment / "nowhere")])


def test_unfinished_ptq_variant_is_refused(tmp_path, monkeypatch):
    monkeypatch.undo()
    import sofa_speechlm.lm.experiment as experiment

    monkeypatch.setattr(experiment.LMExperiment, "find", classmethod(lambda cls, d: type("E", (), {"load": lambda self, device: (None, argparse.Namespace()), "finetune": "full"})()))
    (tmp_path / "rtn_w4a16").mkdir()
    with pytest.raises(FileNotFoundError, match="rtn_w4a16.*no .done marker"):
        cli.load_model(tmp_path, tmp_path / "rtn_w4a16", "cpu")


def test_config_paths_resolve_from_the_recipe_dir(tmp_path, monkeypatch):
    (tmp_path / "recipe/dump").mkdir(parents=True)
    (tmp_path / "recipe/dump/bpe.model").write_text("x")
    monkeypatch.chdir(tmp_path)
    assert cli.recipe_path("dump/bpe.model", tmp_path / "recipe/exp/lm_x") == tmp_path / "recipe/dump/bpe.model"
    assert cli.recipe_path("dump/none.model", tmp_path / "recipe/exp/lm_x") == cli.Path("dump/none.model")


def test_attention_window_centres_on_the_task_marker():
    pieces = ["<sos/eos>", "<startofspeech>"] + ["\u4e00"] * 100 + ["<generatetext>"] + ["\u2581cat"] * 20
    start, end = cli.attention_window(pieces, 40)
    assert end - start == 40 and start <= 102 < end and pieces[start + 20] == "<generatetext>"
    assert cli.attention_window(pieces[:30], 40) == (0, 30)
