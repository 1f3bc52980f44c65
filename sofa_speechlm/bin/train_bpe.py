"""Trains the joint sentencepiece model over LM text and writes the ESPnet token list.

Outputs `<output_dir>/bpe.model` and `<output_dir>/tokens.txt` (<blank>, <unk>, pieces, <sos/eos>);
the four task tokens are user-defined symbols. The LM text streams into sentencepiece, so a
corpus larger than memory trains (sentencepiece samples --input_sentence_size of its lines).
"""

from __future__ import annotations

import argparse
import logging

from sofa_speechlm.data import DataDirError
from sofa_speechlm.text.bpe import train_sentencepiece, write_token_list
from sofa_speechlm.bin import add_log_level, setup_logging


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--lm_text", required=True, help="`uttid text` lines to train on (stage 3's train all.txt)")
    parser.add_argument("--output_dir", required=True, help="output dir, e.g. dump/token_list/bpe_unigram1000")
    parser.add_argument("--nbpe", type=int, default=1000, help="sentencepiece vocabulary size")
    parser.add_argument("--bpemode", default="unigram", choices=("unigram", "bpe"), help="sentencepiece model type")
    parser.add_argument("--input_sentence_size", type=int, default=10_000_000, help="at most this many lines are sampled for training")
    parser.add_argument("--num_threads", type=int, default=1, help="sentencepiece trainer threads")
    add_log_level(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = get_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        model = train_sentencepiece(args.lm_text, args.output_dir, args.nbpe, args.bpemode, args.input_sentence_size, args.num_threads)
    except (DataDirError, ValueError) as error:
        raise SystemExit(f"train_bpe: error: {error}") from None
    tokens = write_token_list(model, f"{args.output_dir}/tokens.txt")
    logging.info("token list of %d tokens in %s/tokens.txt", len(tokens), args.output_dir)


if __name__ == "__main__":
    main()
