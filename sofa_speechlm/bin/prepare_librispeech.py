"""Stage 1 of egs/librispeech: LibriSpeech subsets (and optionally its LM corpus) as data dirs."""

from __future__ import annotations

import argparse
import logging
import sys

from sofa_speechlm.data.kaldi import DataDirError
from sofa_speechlm.data.librispeech import prepare_librispeech
from sofa_speechlm.bin import setup_logging


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus_dir", required=True, help="the LibriSpeech folder holding train-clean-100/, dev-clean/, ...")
    parser.add_argument("--datadir", required=True)
    parser.add_argument("--fs", type=int, default=16000)
    parser.add_argument("--train_sets", default="train-clean-100", help="space-separated training subsets")
    parser.add_argument("--dev_set", default="dev-clean")
    parser.add_argument("--test_set", default="test-clean")
    parser.add_argument("--lm_text", default=None, help="librispeech-lm-norm.txt for textLM training (transcripts when absent)")
    parser.add_argument("--num_lm_sentences", type=int, default=0, help="sample this many LM sentences (0: all)")
    parser.add_argument("--seed", type=int, default=777)
    return parser


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    args = get_parser().parse_args(argv)
    try:
        prepare_librispeech(args.corpus_dir, args.datadir, args.fs, args.train_sets.split(), args.dev_set, args.test_set, args.lm_text, args.num_lm_sentences, args.seed)
    except DataDirError as error:
        logging.error("%s", error)
        return 1
    logging.info("LibriSpeech data dirs written to %s", args.datadir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
