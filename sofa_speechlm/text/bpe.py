"""The joint sentencepiece model over LM text (text and unit characters) and its ESPnet token list."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import sentencepiece as spm

from sofa_speechlm.data import read_table
from sofa_speechlm.text.templates import SPECIAL_TOKENS

BLANK, UNK, SOS_EOS = "<blank>", "<unk>", "<sos/eos>"


def train_sentencepiece(
    lm_text: str | Path,
    model_dir: str | Path,
    nbpe: int,
    bpemode: str = "unigram",
    input_sentence_size: int = 10_000_000,
    num_threads: int = 1,
) -> Path:
    """Trains `model_dir/bpe.model` on the text column of `lm_text` (`uttid text` lines).

    Every character is kept (character_coverage 1.0) so that every unit id has a piece; the
    special tokens are user-defined symbols, never split or merged.
    """
    if bpemode not in ("unigram", "bpe"):
        raise ValueError(f"--bpemode {bpemode}: expected unigram or bpe")
    lines = list(read_table(lm_text).values())
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".txt", dir=model_dir, delete=False) as stream:
        stream.writelines(line + "\n" for line in lines)
    try:
        spm.SentencePieceTrainer.train(
            input=stream.name,
            model_prefix=str(model_dir / "bpe"),
            vocab_size=nbpe,
            model_type=bpemode,
            character_coverage=1.0,
            user_defined_symbols=list(SPECIAL_TOKENS),
            add_dummy_prefix=False,  # lines start with a special token: no lone "▁" before it
            max_sentence_length=max(4192, max(len(line.encode("utf-8")) for line in lines) + 1),
            input_sentence_size=input_sentence_size,
            shuffle_input_sentence=True,
            num_threads=num_threads,
            minloglevel=1,
        )
    except RuntimeError as error:
        raise ValueError(f"sentencepiece training on {lm_text} with --nbpe {nbpe} --bpemode {bpemode} failed: {error}") from None
    finally:
        Path(stream.name).unlink()
    logging.info("trained %s sentencepiece model %s on %d lines", bpemode, model_dir / "bpe.model", len(lines))
    return model_dir / "bpe.model"


def token_list(processor: spm.SentencePieceProcessor) -> list[str]:
    """ESPnet token list: <blank>, <unk>, the pieces (no control symbols), <sos/eos> last."""
    pieces = [
        processor.id_to_piece(index)
        for index in range(processor.get_piece_size())
        if not (processor.is_control(index) or processor.is_unknown(index))
    ]
    return [BLANK, UNK, *pieces, SOS_EOS]


def write_token_list(model: str | Path, path: str | Path) -> list[str]:
    tokens = token_list(spm.SentencePieceProcessor(model_file=str(model)))
    Path(path).write_text("".join(token + "\n" for token in tokens), encoding="utf-8")
    return tokens
