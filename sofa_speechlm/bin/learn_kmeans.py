"""Learns k-means cluster centres over dumped features (MiniBatchKMeans, fairseq simple_kmeans settings).

At most --max_frames frames are held in memory (a uniform sample when the dump has more); the
model is saved as a [K, dim] float32 .npy of cluster centres.
"""

from __future__ import annotations

import argparse
import logging

from sofa_speechlm.speech.kmeans import learn_kmeans, sample_features, save_centres
from sofa_speechlm.bin import add_log_level, setup_logging


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--feats_scp", nargs="+", required=True, help="feature scp files (dump_features of the train speech data dirs)")
    parser.add_argument("--output_file", required=True, help="output .npy of cluster centres")
    parser.add_argument("--nclusters", type=int, default=200, help="number of clusters K (unit vocabulary size)")
    parser.add_argument("--max_frames", type=int, default=2_000_000, help="frames held in memory (max_frames x dim x 4 bytes); a uniform sample when there are more")
    parser.add_argument("--seed", type=int, default=0, help="seed of the frame sample and of k-means")
    parser.add_argument("--batch_size", type=int, default=10000, help="MiniBatchKMeans batch size")
    parser.add_argument("--n_init", type=int, default=20, help="k-means++ initialisations tried")
    add_log_level(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = get_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        features = sample_features(args.feats_scp, args.max_frames, args.seed)
        centres = learn_kmeans(features, args.nclusters, seed=args.seed, batch_size=args.batch_size, n_init=args.n_init)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"learn_kmeans: error: {error}") from None
    save_centres(args.output_file, centres)
    logging.info("saved %d cluster centres of dimension %d to %s", *centres.shape, args.output_file)


if __name__ == "__main__":
    main()
