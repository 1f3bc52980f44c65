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
    train_bpe_cli.main(["--lm_text", str(root / "all.txt"), "--output_dir", str(root / "bpe"), "--nbpe", "150", "--bpemode", request.param])
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
        train_bpe_cli.main(["--lm_text", str(tmp_path / "all.txt"), "--output_dir", str(tmp_path / "bpe"), "--nbpe", "5000"])


def test_training_streams_its_input(tmp_path):
    """Python-side memory stays far below the corpus size: lines are never collected in a list."""
    import tracemalloc

    from sofa_speechlm.text.bpe import train_sentencepiece

    rng = random.Random(0)
    pool = [format_task("speechlm", units=[rng.randrange(K) for _ in range(rng.randint(60, 120))]) for _ in range(500)]
    with open(tmp_path / "all.txt", "w", encoding="utf-8") as stream:
        stream.writelines(f"speechlm_{index:06d} {pool[index % len(pool)]}\n" for index in range(40_000))
    size = (tmp_path / "all.txt").stat().st_size
    tracemalloc.start()
    try:
        train_sentencepiece(tmp_path / "all.txt", tmp_path / "bpe", 100, input_sentence_size=1000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert size > 10_000_000
    assert peak < size / 20, f"peak Python memory {peak} bytes for a {size}-byte corpus"


def test_a_generator_trains_the_same_model_as_the_file(tmp_path):
    from sofa_speechlm.text.bpe import train_sentencepiece

    examples = corpus()
    write_table(tmp_path / "all.txt", {key: format_task(*example) for key, example in examples.items()})
    lines = (format_task(*examples[key]) for key in sorted(examples))
    models = [train_sentencepiece(source, tmp_path / name, 150) for source, name in ((tmp_path / "all.txt", "file"), (lines, "lines"))]

    def pieces(model):
        processor = spm.SentencePieceProcessor(model_file=str(model))
        return [(processor.id_to_piece(i), processor.get_score(i)) for i in range(processor.get_piece_size())]

    assert pieces(models[0]) == pieces(models[1])


def test_a_bad_line_late_in_the_corpus_is_an_error_and_leaves_no_model(tmp_path):
    lines = {f"u{index:03d}": f"<generatetext> {' '.join(random.Random(index).choices(WORDS, k=6))}" for index in range(200)}
    write_table(tmp_path / "all.txt", lines)
    with open(tmp_path / "all.txt", "a", encoding="utf-8") as stream:
        stream.write("u999\n")
    with pytest.raises(SystemExit, match=r"train_bpe: error: .*all.txt:201: utterance u999 has no value"):
        train_bpe_cli.main(["--lm_text", str(tmp_path / "all.txt"), "--output_dir", str(tmp_path / "bpe"), "--nbpe", "40"])
    assert not (tmp_path / "bpe" / "bpe.model").exists()
