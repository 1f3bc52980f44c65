"""Units of speech data dirs re-extracted with a quantized HuBERT tokenizer (quantize_tokenizer).

    python -m sofa_speechlm.bin.quantized_units --tokenizer_dir exp/tokenizer_ptq/stablequant_w8a8_all \
        --data_dir data/test/speechlm data/test/asr --output_dir dump/tokenizer_ptq/stablequant_w8a8_all/test

Each data dir D becomes <output_dir>/<basename D>: a copy of D's tables (wav.scp, text, utt2spk,
spk2utt, segments when present) with `units` (and with --dedup `units_dedup`, `units_dur`) from
the quantized tokenizer, in the units format of design.md, so make_lm_text reads it like stage 2's.
Utterances whose audio is unusable get no units (logged).
"""
from __future__ import annotations

import argparse
import logging
import shutil
from pathlib import Path

import torch
from tqdm import tqdm

from sofa_speechlm.bin import add_log_level, setup_logging
from sofa_speechlm.data import DataDir, DataDirError
from sofa_speechlm.quant.tokenizer.io import load_quantized_tokenizer
from sofa_speechlm.speech.fairseq_checkpoint import CheckpointError
from sofa_speechlm.speech.features import read_waveforms
from sofa_speechlm.speech.hubert import FeatureError
from sofa_speechlm.speech.units import write_units

COPIED = ("wav.scp", "text", "utt2spk", "spk2utt", "segments", "utt2num_samples")


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer_dir", required=True, help="a quantized tokenizer dir written by quantize_tokenizer")
    parser.add_argument("--data_dir", nargs="+", required=True, help="speech data dirs (wav.scp) to tokenize")
    parser.add_argument("--output_dir", required=True, help="receives one data dir per --data_dir (by its base name)")
    parser.add_argument("--kmeans_file", default="", help="k-means model (default: the one the tokenizer was calibrated with)")
    parser.add_argument("--dedup", action="store_true", help="also write units_dedup and units_dur")
    parser.add_argument("--execution", default="auto", choices=["auto", "real", "simulated"], help="int8 kernels for W8A8 linears (auto: where available)")
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument("--num_threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    add_log_level(parser)
    return parser


def tokenize_data_dir(tokenizer, data_dir: str, output_dir: Path, dedup: bool) -> Path:
    data = DataDir(data_dir)
    out = output_dir / data.path.name
    out.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        if data.has(name):
            shutil.copyfile(data.path / name, out / name)
    units, bad = {}, 0
    for utt_id, waveform, reason in tqdm(read_waveforms(data, tokenizer.sample_rate, data.utt_ids), total=len(data.utt_ids),
                                         desc=f"units {data_dir}", mininterval=10):
        try:
            if waveform is not None:
                units[utt_id] = tokenizer.units(waveform).tolist()
                continue
        except FeatureError as error:
            reason = str(error)
        bad += 1
        logging.warning("%s %s: no units (%s)", data_dir, utt_id, reason)
    write_units(out, units, dedup=dedup)
    logging.info("%s: units of %d utterances (%s, %s execution) -> %s; %d left out", data_dir, len(units),
                 tokenizer.config["method"], tokenizer.execution, out / "units", bad)
    return out


def main(argv: list[str] | None = None) -> None:
    args = get_parser().parse_args(argv)
    setup_logging(args.log_level)
    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    try:
        tokenizer = load_quantized_tokenizer(args.tokenizer_dir, args.device, args.execution, args.kmeans_file or None)
        if tokenizer.kmeans is None:
            raise ValueError(f"--tokenizer_dir {args.tokenizer_dir} records no k-means model: give --kmeans_file")
        for data_dir in args.data_dir:
            tokenize_data_dir(tokenizer, data_dir, Path(args.output_dir), args.dedup)
    except (CheckpointError, DataDirError, ValueError, FileNotFoundError) as error:
        raise SystemExit(f"quantized_units: error: {error}") from None


if __name__ == "__main__":
    main()
