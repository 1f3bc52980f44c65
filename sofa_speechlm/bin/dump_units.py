"""Labels dumped features with a k-means model and writes `units` into speech data dirs.

Pairs --feats_scp[i] with --data_dir[i] (one process for many dirs saves start-up time).
Utterances without features (listed in the feature dump's bad_utts) get no units; their
number is logged. With --dedup, `units_dedup` and `units_dur` (run lengths in frames) too.
"""

from __future__ import annotations

import argparse
import logging

import kaldiio
from tqdm import tqdm

from sofa_speechlm.data import DataDir, DataDirError
from sofa_speechlm.speech.kmeans import KmeansQuantizer
from sofa_speechlm.speech.units import write_units
from sofa_speechlm.bin import setup_logging


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--feats_scp", nargs="+", required=True, help="feature scp of each data dir (from dump_features)")
    parser.add_argument("--data_dir", nargs="+", required=True, help="speech data dirs that receive a units file")
    parser.add_argument("--km", required=True, help="k-means model: our .npy of centres or fairseq's km.bin")
    parser.add_argument("--dedup", action="store_true", help="also write units_dedup and units_dur")
    return parser


def label_data_dir(feats_scp: str, data_dir: str, quantizer: KmeansQuantizer, dedup: bool) -> None:
    utt_ids = DataDir(data_dir).utt_ids
    features = kaldiio.load_scp(feats_scp)
    units = {
        utt_id: quantizer(features[utt_id]).tolist()
        for utt_id in tqdm(utt_ids, desc=f"units {data_dir}", mininterval=10)
        if utt_id in features
    }
    write_units(data_dir, units, dedup=dedup)
    logging.info("%s: units of %d utterances (K=%d); %d without features left out",
                 data_dir, len(units), quantizer.n_clusters, len(utt_ids) - len(units))


def main(argv: list[str] | None = None) -> None:
    setup_logging()
    parser = get_parser()
    args = parser.parse_args(argv)
    if len(args.feats_scp) != len(args.data_dir):
        parser.error(f"{len(args.feats_scp)} --feats_scp for {len(args.data_dir)} --data_dir: give one scp per data dir")
    try:
        quantizer = KmeansQuantizer.load(args.km)
        for feats_scp, data_dir in zip(args.feats_scp, args.data_dir):
            label_data_dir(feats_scp, data_dir, quantizer, args.dedup)
    except (DataDirError, ValueError, FileNotFoundError) as error:
        raise SystemExit(f"dump_units: error: {error}") from None


if __name__ == "__main__":
    main()
