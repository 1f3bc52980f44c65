"""Stage 1 of the embedded default: the espeak-ng mini corpus as Kaldi data dirs."""

from __future__ import annotations

import argparse
import logging
import sys

from sofa_speechlm.data.kaldi import DataDirError
from sofa_speechlm.data.mini_corpus import CorpusError, make_mini_corpus
from sofa_speechlm.bin import add_log_level, setup_logging


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sentences", required=True, help="prose sentences, one a line (local/mini_corpus/prose.txt)")
    parser.add_argument("--data_dir", required=True, help="output root: DATA_DIR/{train,dev,test}/{textlm,speechlm,asr,tts}")
    parser.add_argument("--seed", type=int, default=777)
    parser.add_argument("--fs", type=int, default=16000, help="sampling rate of the wavs")
    parser.add_argument("--num_text", type=int, default=2500, help="sentences for textLM over all splits")
    parser.add_argument("--num_spoken", type=int, default=500, help="spoken utterances over all splits (a subset of the textLM sentences)")
    parser.add_argument("--nj", type=int, default=1, help="parallel espeak-ng processes")
    add_log_level(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        make_mini_corpus(args.sentences, args.data_dir, args.seed, args.fs, args.num_text, args.num_spoken, args.nj)
    except (CorpusError, DataDirError) as error:
        logging.error("%s", error)
        return 1
    logging.info("mini corpus written to %s/{train,dev,test}/{textlm,speechlm,asr,tts}", args.data_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
