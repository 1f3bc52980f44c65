"""LM text lines longer than the LM's positions: reported by id, dropped, cut or refused, never an IndexError."""

from __future__ import annotations

import logging
import random
from pathlib import Path

import pytest
import sentencepiece as spm
import torch
import yaml

from sofa_speechlm.bin import limit_lm_text as limit_cli
from sofa_speechlm.bin import lm_train
from sofa_speechlm.data import read_table
from sofa_speechlm.text.bpe import train_sentencepiece, write_token_list
from sofa_speechlm.text.length import limit_token_ids
from test_lm_espnet import write_lm_text

REPO = Path(__file__).resolve().parents[1]
POSITIONS = 32  # of the tiny OPT config below: lines of at most 31 BPE tokens fit
LONG_IDS = ("utt0003", "utt0011")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Short task lines, two made far longer than POSITIONS; a BPE model; ESPnet shape files."""
    root = tmp_path_factory.mktemp("length")
    for split, count, seed in (("train", 120, 0), ("dev", 16, 1)):
        write_lm_text(root / f"{split}.txt", count, seed)
    lines = read_table(root / "train.txt")
    rng = random.Random(2)
    for utt_id in LONG_IDS:  # a long textLM line: cut, it keeps its task token
        lines[utt_id] = "<generatetext> " + " ".join(rng.choice(["the", "cat", "sat", "on", "mat"]) for _ in range(60))
    (root / "train.txt").write_text("".join(f"{k} {v}\n" for k, v in lines.items()), encoding="utf-8")
    bpemodel = train_sentencepiece(root / "train.txt", root / "bpe", nbpe=60)
    write_token_list(bpemodel, root / "tokens.txt")
    processor = spm.SentencePieceProcessor(model_file=str(bpemodel))
    for split in ("train", "dev"):
        shapes = {k: len(processor.encode(v)) for k, v in read_table(root / f"{split}.txt").items()}
        (root / f"{split}_shape").write_text("".join(f"{k} {n}\n" for k, n in shapes.items()))
    config = yaml.safe_load((REPO / "conf/lm/tiny_sofa_full.yaml").read_text())
    config["lm_conf"]["hf_config"].update(max_position_embeddings=POSITIONS, hidden_size=64, word_embed_proj_dim=64, ffn_dim=128)
    config.update(max_epoch=1, batch_bins=400, use_tensorboard=False, use_matplotlib=False)
    (root / "lm.yaml").write_text(yaml.safe_dump(config))
    assert max(shapes_of(root, "train").values()) > POSITIONS
    return root


def shapes_of(root: Path, split: str) -> dict[str, int]:
    return {k: int(v) for k, v in read_table(root / f"{split}_shape").items()}


def limit(root: Path, split: str, rule: str, output: Path) -> None:
    limit_cli.main(["--train_config", str(root / "lm.yaml"), "--lm_text", str(root / f"{split}.txt"),
                    "--bpemodel", str(root / "bpe/bpe.model"), "--shape_file", str(root / f"{split}_shape"),
                    "--long_lines", rule, "--output_dir", str(output)])


def test_long_lines_are_listed_by_id_and_dropped(corpus, tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        limit(corpus, "train", "drop", tmp_path / "out")
    shapes = shapes_of(corpus, "train")
    long = {k: n for k, n in shapes.items() if n > POSITIONS - 1}
    assert set(LONG_IDS) <= set(long)
    listing = read_table(tmp_path / "out/long_lines")
    assert {k: int(v) for k, v in listing.items()} == long
    assert f"{len(long)} of {len(shapes)} lines are longer than {POSITIONS - 1} BPE tokens" in caplog.text
    assert LONG_IDS[0] in caplog.text and "long_lines" in caplog.text
    text, shape = read_table(tmp_path / "out/text"), read_table(tmp_path / "out/text_shape")
    assert list(text) == [k for k in read_table(corpus / "train.txt") if k not in long]
    assert set(shape) == set(text) and not (tmp_path / "out/text").is_symlink()


def test_long_lines_are_cut_to_fit(corpus, tmp_path):
    limit(corpus, "train", "cut", tmp_path / "out")
    original, text = read_table(corpus / "train.txt"), read_table(tmp_path / "out/text")
    shape = {k: int(v) for k, v in read_table(tmp_path / "out/text_shape").items()}
    processor = spm.SentencePieceProcessor(model_file=str(corpus / "bpe/bpe.model"))
    assert list(text) == list(original)
    for utt_id in LONG_IDS:
        assert original[utt_id].startswith(text[utt_id]) and len(text[utt_id]) < len(original[utt_id])
        assert text[utt_id].startswith("<generatetext> ")
    assert all(len(processor.encode(v)) == shape[k] <= POSITIONS - 1 for k, v in text.items())


def test_long_lines_are_an_error_naming_them(corpus, tmp_path):
    with pytest.raises(SystemExit, match=rf"limit_lm_text: error: .*train.txt: \d+ of 120 lines are longer than {POSITIONS - 1} "
                                         rf"BPE tokens .*{LONG_IDS[0]} \(\d+ tokens\).*long_lines"):
        limit(corpus, "train", "error", tmp_path / "out")
    assert set(LONG_IDS) <= set(read_table(tmp_path / "out/long_lines"))
    assert not (tmp_path / "out/text").exists()


def test_files_without_long_lines_are_linked_not_copied(corpus, tmp_path):
    limit_cli.main(["--max_length", "1000", "--lm_text", str(corpus / "dev.txt"), "--bpemodel", str(corpus / "bpe/bpe.model"),
                    "--shape_file", str(corpus / "dev_shape"), "--output_dir", str(tmp_path / "out")])
    assert (tmp_path / "out/text").resolve() == (corpus / "dev.txt").resolve()
    assert (tmp_path / "out/text_shape").resolve() == (corpus / "dev_shape").resolve()
    assert (tmp_path / "out/long_lines").read_text() == ""


def test_bad_options_are_clear_errors(corpus, tmp_path):
    common = ["--lm_text", str(corpus / "dev.txt"), "--output_dir", str(tmp_path / "out")]
    with pytest.raises(SystemExit, match="give --train_config .* or --max_length"):
        limit_cli.main([*common, "--bpemodel", str(corpus / "bpe/bpe.model")])
    with pytest.raises(SystemExit, match="--bpemodel .*missing.model: not found"):
        limit_cli.main([*common, "--bpemodel", str(tmp_path / "missing.model"), "--max_length", "10"])
    (tmp_path / "in").mkdir()
    (tmp_path / "in/text").write_text((corpus / "dev.txt").read_text())
    with pytest.raises(SystemExit, match="in/text: the output .*in/text would overwrite it"):
        limit_cli.main(["--lm_text", str(tmp_path / "in/text"), "--output_dir", str(tmp_path / "in"),
                        "--bpemodel", str(corpus / "bpe/bpe.model"), "--max_length", "1000"])
    (tmp_path / "short_shape").write_text("utt0000 3\n")
    with pytest.raises(SystemExit, match="short_shape: no shape for .* lines of the LM text"):
        limit_cli.main([*common, "--bpemodel", str(corpus / "bpe/bpe.model"), "--max_length", "5",
                        "--shape_file", str(tmp_path / "short_shape")])


def train(corpus: Path, root: Path, train_text: Path, train_shape: Path, dev_text: Path, dev_shape: Path) -> None:
    lm_train.main([
        "--config", str(corpus / "lm.yaml"), "--token_list", str(corpus / "tokens.txt"),
        "--bpemodel", str(corpus / "bpe/bpe.model"), "--token_type", "bpe", "--ngpu", "0", "--num_workers", "0",
        "--train_data_path_and_name_and_type", f"{train_text},text,text", "--valid_data_path_and_name_and_type", f"{dev_text},text,text",
        "--train_shape_file", str(train_shape), "--valid_shape_file", str(dev_shape), "--fold_length", "150",
        "--output_dir", str(root), "--scheduler_conf", "warmup_steps=5",
    ])


def test_espnet_training_runs_on_the_dropped_text(corpus, tmp_path):
    """Dropping changes the ids: ESPnet must find the text and its shape file consistent."""
    for split in ("train", "dev"):
        limit(corpus, split, "drop", tmp_path / split)
    train(corpus, tmp_path / "exp", tmp_path / "train/text", tmp_path / "train/text_shape", tmp_path / "dev/text", tmp_path / "dev/text_shape")
    assert (tmp_path / "exp/1epoch.pth").is_file()


def tiny_opt(positions: int):
    from transformers import OPTConfig, OPTForCausalLM

    torch.manual_seed(0)
    config = OPTConfig(vocab_size=20, hidden_size=16, word_embed_proj_dim=16, num_hidden_layers=1, num_attention_heads=2,
                       ffn_dim=32, max_position_embeddings=positions)
    return OPTForCausalLM(config).eval()


def test_perplexity_drops_cuts_or_refuses_lines_over_the_model_positions():
    from sofa_speechlm.eval.perplexity import perplexity
    from sofa_speechlm.text.length import LongLinesError

    token_list = ["<blank>", "<unk>", *[f"t{i}" for i in range(17)], "<sos/eos>"]
    model = tiny_opt(positions=8)
    short = [[3, 4, 5], [6, 7, 8, 9, 10, 11, 12]]  # 7 tokens + <sos/eos> = 8 positions: fits
    long = [list(range(2, 18))]
    dropped = perplexity(model, short + long, token_list, loss="full")
    assert (dropped.sequences, dropped.long_lines) == (2, 1)
    assert dropped.ppl == pytest.approx(perplexity(model, short, token_list, loss="full").ppl)
    cut = perplexity(model, short + long, token_list, loss="full", long_lines="cut")
    assert (cut.sequences, cut.long_lines) == (3, 1)
    assert cut.ppl == pytest.approx(perplexity(model, short + [long[0][:7]], token_list, loss="full").ppl)
    with pytest.raises(LongLinesError, match=r"1 of 3 lines are longer than 7 BPE tokens .*: utt_c \(16 tokens\)"):
        perplexity(model, short + long, token_list, loss="full", long_lines="error", names=["utt_a", "utt_b", "utt_c"])
    with pytest.raises(IndexError):  # what the rule prevents: OPT's learned positions run out
        perplexity(model, short + long, token_list, loss="full", max_length=100)


def test_token_id_rule_names_lines_by_number():
    kept, report = limit_token_ids([[1] * 3, [1] * 9, [1] * 2], 4, "drop")
    assert kept == [0, 2] and report.long == [("line 2", 9)]
