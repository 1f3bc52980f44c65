"""Dumps frame features (HuBERT layer or MFCC) of one job's share of a data dir.

Stage 2a dumps only the k-means training sample this way (`--percent`, `--max_frames`); units
are computed by `dump_units`, which labels features as it computes them. Run as an array job:
`${train_cmd} JOB=1:N log/dump_features.JOB.log python -m sofa_speechlm.bin.dump_features
--data_dir D --output_dir O --job JOB --nj N`. Writes O/feats.JOB.{ark,scp} (float32) and
O/bad_utts.JOB.txt (utterances left out: unreadable, empty, NaN/Inf, all-zero or too short audio).
"""

from __future__ import annotations

import argparse

import torch

from sofa_speechlm.data import DataDirError
from sofa_speechlm.speech.fairseq_checkpoint import CheckpointError
from sofa_speechlm.speech.features import build_feature_reader, dump_features
from sofa_speechlm.bin import add_log_level, setup_logging


def add_feature_options(parser: argparse.ArgumentParser) -> None:
    """Options of the feature reader and the job split, shared with dump_units."""
    parser.add_argument("--hubert_ckpt", default="", help="fairseq HuBERT .pt or HuggingFace HuBERT dir; MFCC + deltas when empty")
    parser.add_argument("--layer", type=int, default=6, help="HuBERT layer (fairseq output_layer: output of the L-th block)")
    parser.add_argument("--fs", type=int, default=16000, help="sampling rate for MFCC (HuBERT always reads 16 kHz; audio is resampled)")
    parser.add_argument("--job", type=int, default=1, help="this job's index, 1..nj")
    parser.add_argument("--nj", type=int, default=1, help="number of jobs the data dir is split into")
    parser.add_argument("--device", default="cpu", help="torch device for HuBERT (cpu, cuda, cuda:1, ...)")
    parser.add_argument("--num_threads", type=int, default=0, help="torch CPU threads of this job (0: torch's default); jobs sharing cores run far faster with cores / nj")
    add_log_level(parser)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", required=True, help="Kaldi data dir with wav.scp (and optional segments)")
    add_feature_options(parser)
    parser.add_argument("--output_dir", required=True, help="where feats.JOB.{ark,scp} and bad_utts.JOB.txt go")
    parser.add_argument("--percent", type=float, default=1.0, help="fraction of the data dir's utterances dumped (a seeded random choice, the same in every job), in (0, 1]")
    parser.add_argument("--seed", type=int, default=0, help="seed of the utterance choice")
    parser.add_argument("--max_frames", type=int, default=0, help="at most about this many frames over all jobs (each job max_frames / nj, chosen utterances in a seeded random order); 0: no bound")
    return parser


def main(argv: list[str] | None = None) -> None:
    args = get_parser().parse_args(argv)
    setup_logging(args.log_level)
    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    try:
        reader = build_feature_reader(args.hubert_ckpt, layer=args.layer, fs=args.fs, device=args.device)
        dump_features(args.data_dir, args.output_dir, reader, job=args.job, nj=args.nj,
                      percent=args.percent, seed=args.seed, max_frames=args.max_frames)
    except (CheckpointError, DataDirError, ValueError, FileNotFoundError) as error:
        raise SystemExit(f"dump_features: error: {error}") from None


if __name__ == "__main__":
    main()
