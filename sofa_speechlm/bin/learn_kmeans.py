"""Learns k-means cluster centres over dumped features (MiniBatchKMeans, fairseq simple_kmeans settings).

The model is saved as a [K, dim] float32 .npy of cluster centres.
"""

from __future__ import annotations

import argparse
import logging

from sofa_speechlm.speech.kmeans import learn_kmeans, sample_features, save_centres
from sofa_speechlm.bin import setup_logging


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--feats_scp", nargs="+", required=True, help="feature scp files (e.g. of every train speech data dir)")
    parser.add_argument("--out", required=True, help="output .npy of cluster centres")
    parser.add_argument("--nclusters", type=int, default=200, help="number of clusters K (unit vocabulary size)")
    parser.add_argument("--percent", type=float, default=1.0, help="fraction of the utterances used for training, in (0, 1]")
    parser.add_argument("--seed", type=int, default=0, help="seed of the utterance sampling and of k-means")
    parser.add_argument("--batch_size", type=int, default=10000, help="MiniBatchKMeans batch size")
    parser.add_argument("--n_init", type=int, default=20, help="k-means++ initialisations tried")
    return parser


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    args = get_parser().parse_args(argv)
    try:
        features = sample_features(args.feats_scp, args.percent, args.seed)
        centres = learn_kmeans(features, args.nclusters, seed=args.seed, batch_size=args.batch_size, n_init=args.n_init)
    except (ValueError, FileNotFoundError) as error:
        raise SystemExit(f"learn_kmeans: error: {error}") from None
    save_centres(args.out, centres)
    logging.info("saved %d cluster centres of dimension %d to %s", *centres.shape, args.out)


if __name__ == "__main__":
    main()
