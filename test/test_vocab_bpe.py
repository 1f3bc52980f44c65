"""Joint sentencepiece model and token list: units and text round-trip through the BPE."""

from __future__ import annotations

import random

import pytest
import sentencepiece as spm

from sofa_speechlm.bin import train_bpe as train_bpe_cli
from sofa_speechlm.data import write_table
from sofa_speechlm.text import SPECIAL_TOKENS, JointTokenizer, format_task

WORDS = "THE QUICK BROWN FOX JUMPS OVER A LAZY DOG AND RUNS FAR AWAY FROM HOME AGAIN".split()
K = 40


def corpus(count=400, seed=0):
    rng = random.Random(seed)
    lines = {}
    for index in range(count):
        task = ("textlm", "speechlm", "asr", "tts")[index % 4]
        text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 9)))
        units = [rng.randrange(K) for _ in range(rng.randint(20, 80))]
        lines[f"{task}_{index:04d}"] = (task, text, units)
    return lines


@pytest.fixture(scope="module", params=["unigram", "bpe"])
def trained(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    examples = corpus()
    write_table(root / "all.txt", {key: format_task(*example) for key, example in examples.items()})
    train_bpe_cli.main(["--lm_text", str(root / "all.txt"), "--model_dir", str(root / "bpe"), "--nbpe", "150", "--bpemode", request.param])
    return root / "bpe", examples


def test_token_list_is_espnet_layout(trained):
    model_dir, _ = trained
    tokens = (model_dir / "tokens.txt").read_text(encoding="utf-8").splitlines()
    processor = spm.SentencePieceProcessor(model_file=str(model_dir / "bpe.model"))
    assert tokens[:2] == ["<blank>", "<unk>"] and tokens[-1] == "<sos/eos>"
    assert len(tokens) == len(set(tokens)) == 150 - 3 + 3  # pieces minus <unk>, <s>, </s>; plus the three ESPnet tokens
    assert tokens[2:6] == list(SPECIAL_TOKENS)
    assert set(tokens[2:-1]) == {processor.id_to_piece(i) for i in range(processor.get_piece_size())} - {"<unk>", "<s>", "</s>"}


def test_units_and_text_round_trip_through_the_bpe(trained):
    model_dir, examples = trained
    tokenizer = JointTokenizer(model_dir / "bpe.model", model_dir / "tokens.txt")
    held_out = corpus(count=40, seed=1)  # unseen combinations
    for task, text, units in [*examples.values(), *held_out.values()]:
        pieces = tokenizer.encode(task, text, units)
        assert pieces[0] in SPECIAL_TOKENS  # no lone "▁" before the task token
        ids = tokenizer.pieces_to_ids(pieces)
        assert tokenizer.unk_id not in ids
        assert tokenizer.detokenize(tokenizer.ids_to_pieces(ids)) == format_task(task, text, units)
        segments = tokenizer.decode_ids(ids + [tokenizer.sos_eos_id])
        assert [s.units for s in segments if s.units] == ([units] if task != "textlm" else [])
        assert [s.text for s in segments if s.text] == ([text] if task != "speechlm" else [])


def test_special_tokens_are_single_pieces(trained):
    model_dir, _ = trained
    tokenizer = JointTokenizer(model_dir / "bpe.model", model_dir / "tokens.txt")
    pieces = tokenizer.encode("asr", "HELLO", [1, 2, 3])
    assert pieces[0] == "<startofspeech>" and "<generatetext>" in pieces


def test_generated_continuation_decodes_to_units_and_text(trained):
    model_dir, _ = trained
    tokenizer = JointTokenizer(model_dir / "bpe.model", model_dir / "tokens.txt")
    prompt = tokenizer.encode("tts", "A LAZY DOG", [0])[:-2]  # up to <generatespeech>
    generated = tokenizer.tokenize(" " + format_task("speechlm", units=[4, 4, 9, 1])[len("<generatespeech> ") :])
    segments = tokenizer.decode(prompt + generated)
    assert segments[-1].token == "<generatespeech>" and segments[-1].units == [4, 4, 9, 1]


def test_vocabulary_too_large_is_a_clear_error(tmp_path):
    write_table(tmp_path / "all.txt", {"a": "<generatetext> HELLO", "b": "<generatetext> WORLD"})
    with pytest.raises(SystemExit, match="train_bpe: error: sentencepiece training on .*all.txt with --nbpe 5000"):
        train_bpe_cli.main(["--lm_text", str(tmp_path / "all.txt"), "--model_dir", str(tmp_path / "bpe"), "--nbpe", "5000"])
