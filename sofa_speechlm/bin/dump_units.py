"""Units of one job's share of data dirs: features computed and labelled with k-means in the same job.

As ESPnet's HuBERT recipes label on the fly: no features of the corpus are written to disk.
Run as an array job: `${train_cmd} JOB=1:N log/dump_units.JOB.log python -m
sofa_speechlm.bin.dump_units --data_dir D1 D2 --output_dir O1 O2 --kmeans_file km.npy --job JOB --nj N`
(one process labels its share of every data dir: the model loads once). Writes
Oi/{units,units_dedup,units_dur}.JOB (sorted tables; `cat | LC_ALL=C sort -k1,1` of the jobs'
files gives Di's files) and Oi/bad_utts.JOB.txt (utterances left out, with why).
"""

from __future__ import annotations

import argparse
import logging

import torch

from sofa_speechlm.data import DataDirError
from sofa_speechlm.speech.fairseq_checkpoint import CheckpointError
from sofa_speechlm.speech.features import build_feature_reader, dump_units
from sofa_speechlm.speech.kmeans import KmeansQuantizer
from sofa_speechlm.bin import setup_logging
from sofa_speechlm.bin.dump_features import add_feature_options


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data_dir", nargs="+", required=True, help="Kaldi data dirs with wav.scp (and optional segments)")
    parser.add_argument("--output_dir", nargs="+", required=True, help="one per --data_dir: where its units*.JOB and bad_utts.JOB.txt go")
    parser.add_argument("--kmeans_file", required=True, help="k-means model: our km.npy of centres or fairseq's km.bin")
    add_feature_options(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    parser = get_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    if len(args.data_dir) != len(args.output_dir):
        parser.error(f"{len(args.output_dir)} --output_dir for {len(args.data_dir)} --data_dir: give one output dir per data dir")
    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    try:
        quantizer = KmeansQuantizer.load(args.kmeans_file, device=args.device)
        reader = build_feature_reader(args.hubert_ckpt, layer=args.layer, fs=args.fs, device=args.device)
        if reader.dim != quantizer.dim:
            source = f"--hubert_ckpt {args.hubert_ckpt} --layer {args.layer}" if args.hubert_ckpt else "MFCC"
            raise ValueError(f"--kmeans_file {args.kmeans_file} has {quantizer.dim}-dim centres, but the features ({source}) have {reader.dim} dims")
        logging.info("k-means model %s: K=%d clusters of %d dims", args.kmeans_file, quantizer.n_clusters, quantizer.dim)
        for data_dir, output_dir in zip(args.data_dir, args.output_dir):
            dump_units(data_dir, output_dir, reader, quantizer, job=args.job, nj=args.nj)
    except (CheckpointError, DataDirError, ValueError, FileNotFoundError) as error:
        raise SystemExit(f"dump_units: error: {error}") from None


if __name__ == "__main__":
    main()
