"""Stage 1 of the egs/ recipes: one corpus (in its published layout) as Kaldi data dirs,
one per subset: DATA_DIR/<subset>/{wav.scp,text,utt2spk,spk2utt,utt2num_samples[,segments]}.
A recipe's local/data.sh combines them into its {train,dev,test}/{textlm,speechlm,asr,tts} dirs.
--print_sources prints, one line per subset, `<subset><TAB>root=<folder> listing=<md5>` (what the
recipes' stage-1 markers record, so that a changed corpus root redoes that subset) and writes nothing."""

from __future__ import annotations

import argparse
import logging
import sys

from espnet2.utils.types import str2bool

from sofa_speechlm.bin import add_log_level, setup_logging
from sofa_speechlm.data.corpora import CORPORA, PrepOptions, get_corpus, prepare_corpus, subset_source
from sofa_speechlm.data.kaldi import DataDirError


def get_parser() -> argparse.ArgumentParser:
    defaults = PrepOptions()
    corpora = "; ".join(f"{c.name} ({c.db_var}: {c.layout})" for c in CORPORA.values())
    parser = argparse.ArgumentParser(description=__doc__, epilog=f"corpora: {corpora}")
    parser.add_argument("--corpus", required=True, choices=list(CORPORA), help="which corpus layout to read")
    parser.add_argument("--corpus_dir", default="", help="the directory holding the corpus' top folder, or that folder itself (default: the corpus' db.sh variable from the environment, e.g. $LIBRITTS)")
    parser.add_argument("--data_dir", default="", help="output root: DATA_DIR/<subset>/ (required unless --print_sources)")
    parser.add_argument("--subsets", default="", help="space-separated subsets (default: all the corpus publishes)")
    parser.add_argument("--fs", type=int, default=16000, help="sampling rate of the recipe; audio at another rate is resampled (or refused, see --resample)")
    parser.add_argument("--resample", type=str2bool, default=defaults.resample, help="true: audio at another rate than --fs is resampled by a sox pipe in wav.scp; false: it stops the preparation")
    parser.add_argument("--check_audio", choices=["header", "decode"], default=defaults.check_audio,
                        help="header: read each file's header (finds unreadable/empty files; fast); decode: read every sample (also finds truncated files; slow at scale)")
    parser.add_argument("--text_norm", choices=["upper", "none"], default=defaults.text_norm, help="upper: LibriSpeech's convention (upper case, no punctuation but apostrophes) for every corpus; none: as published")
    parser.add_argument("--segment_method", choices=["vad", "fixed"], default=defaults.segment_method, help="librilight: cut recordings at the json's voice activity (merged up to --segment_length) or into fixed windows")
    parser.add_argument("--segment_length", type=float, default=defaults.segment_length, help="librilight: longest utterance in seconds")
    parser.add_argument("--min_segment", type=float, default=defaults.min_segment, help="librilight: shorter pieces are left out (seconds)")
    parser.add_argument("--vctk_mic", default=defaults.vctk_mic, help="vctk 0.92: microphone (mic1 or mic2)")
    parser.add_argument("--num_sentences", type=int, default=defaults.num_sentences, help="librispeech_lm: sample this many sentences (0: all)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="librispeech_lm: sampling seed")
    parser.add_argument("--nj", type=int, default=defaults.nj, help="parallel audio-header reads")
    parser.add_argument("--print_sources", type=str2bool, default=False,
                        help="true: print each subset's source (resolved corpus folder and a fingerprint of its listing), tab-separated after the subset, and prepare nothing")
    add_log_level(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    if not args.data_dir and not args.print_sources:
        parser.error("--data_dir is required (unless --print_sources true)")
    setup_logging(args.log_level)
    if args.print_sources:
        try:
            for subset in args.subsets.split() or get_corpus(args.corpus).subsets:
                print(f"{subset}\t{subset_source(args.corpus, args.corpus_dir, subset)}")
        except (DataDirError, ValueError) as error:
            logging.error("%s", error)
            return 1
        return 0
    options = PrepOptions(
        text_norm=args.text_norm, check_audio=args.check_audio, resample=args.resample, segment_method=args.segment_method,
        segment_length=args.segment_length, min_segment=args.min_segment, vctk_mic=args.vctk_mic,
        num_sentences=args.num_sentences, seed=args.seed, nj=args.nj,
    )
    try:
        prepare_corpus(args.corpus, args.corpus_dir, args.data_dir, args.subsets.split(), args.fs, options)
    except (DataDirError, ValueError) as error:
        logging.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
