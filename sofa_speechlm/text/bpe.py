"""The joint sentencepiece model over LM text (text and unit characters) and its ESPnet token list."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable, Iterator

import sentencepiece as spm

from sofa_speechlm.text.lm_text import iter_lm_text
from sofa_speechlm.text.templates import SPECIAL_TOKENS

BLANK, UNK, SOS_EOS = "<blank>", "<unk>", "<sos/eos>"


def train_sentencepiece(
    lm_text: str | Path | Iterable[str],
    output_dir: str | Path,
    nbpe: int,
    bpemode: str = "unigram",
    input_sentence_size: int = 10_000_000,
    num_threads: int = 1,
) -> Path:
    """Trains `output_dir/bpe.model` on LM text: a file of `uttid text` lines, or text lines.

    The lines stream into sentencepiece one at a time, so memory on the Python side does not
    grow with the corpus; sentencepiece itself keeps at most `input_sentence_size` lines
    (sampled uniformly when there are more). Every character is kept (character_coverage 1.0)
    so that every unit id has a piece; the special tokens are user-defined symbols, never
    split or merged.
    """
    if bpemode not in ("unigram", "bpe"):
        raise ValueError(f"--bpemode {bpemode}: expected unigram or bpe")
    source = str(lm_text) if isinstance(lm_text, (str, Path)) else "the given lines"
    counter = _Counter(_text_column(lm_text) if isinstance(lm_text, (str, Path)) else iter(lm_text))
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=counter,
            model_prefix=str(output_dir / "bpe"),
            vocab_size=nbpe,
            model_type=bpemode,
            character_coverage=1.0,
            user_defined_symbols=list(SPECIAL_TOKENS),
            add_dummy_prefix=False,  # lines start with a special token: no lone "▁" before it
            max_sentence_length=MAX_SENTENCE_BYTES,  # a filter only: no line is skipped for its length
            input_sentence_size=input_sentence_size,
            shuffle_input_sentence=True,
            num_threads=num_threads,
            minloglevel=1,
        )
    except RuntimeError as error:
        counter.check()  # a bad line ended the input early: that, not the short input, is the error
        raise ValueError(f"sentencepiece training on {source} with --nbpe {nbpe} --bpemode {bpemode} failed: {error}") from None
    if counter.error is not None:  # trained on part of the input: leave no model behind
        for suffix in (".model", ".vocab"):
            (output_dir / f"bpe{suffix}").unlink(missing_ok=True)
        counter.check()
    logging.info("trained %s sentencepiece model %s on %d lines", bpemode, output_dir / "bpe.model", counter.count)
    return output_dir / "bpe.model"


# sentencepiece skips longer lines; its upper bound (1 GiB), far above any LM text line.
MAX_SENTENCE_BYTES = 2**30


class _Counter:
    """An iterator (sentencepiece wants one, not an iterable) that counts the lines it passes.

    sentencepiece ends its input at an exception from the iterator and trains on what it read;
    the exception is kept here instead and raised once training returns.
    """

    def __init__(self, lines: Iterator[str]):
        self.lines, self.count, self.error = lines, 0, None

    def __iter__(self) -> "_Counter":
        return self

    def __next__(self) -> str:
        try:
            line = next(self.lines)
        except StopIteration:
            raise
        except Exception as error:  # noqa: BLE001 - re-raised by check() after training
            self.error = error
            raise StopIteration from None
        self.count += 1
        return line

    def check(self) -> None:
        if self.error is not None:
            raise self.error


def _text_column(path: str | Path) -> Iterator[str]:
    for _, text in iter_lm_text(path):
        yield text


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
