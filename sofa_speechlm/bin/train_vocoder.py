"""Trains the unit HiFi-GAN vocoder on (wav, units) data dirs, or imports a published one.

Writes OUTDIR/checkpoint.pth (resumable: reruns continue from it), OUTDIR/generator.pth +
OUTDIR/config.json (published speech-resynthesis/fairseq layout), OUTDIR/loss.png and
OUTDIR/tensorboard/ (losses and audio samples).
"""

from __future__ import annotations

import argparse
import logging
import sys

import torch

from sofa_speechlm.data import AudioError, DataDir, DataDirError
from sofa_speechlm.vocoder.checkpoint import load_generator, save_published
from sofa_speechlm.vocoder.config import VocoderConfig, VocoderConfigError
from sofa_speechlm.vocoder.trainer import GENERATOR_NAME, VocoderTrainer
from sofa_speechlm.bin import setup_logging


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--outdir", required=True, help="experiment dir of the vocoder")
    parser.add_argument("--config", help="vocoder YAML config (e.g. conf/vocoder/tiny.yaml); required for training")
    parser.add_argument("--data_dirs", nargs="+", default=[], help="training data dirs with wav.scp and units")
    parser.add_argument("--num_embeddings", type=int, default=None, help="unit vocabulary size (overrides the config)")
    parser.add_argument("--max_steps", type=int, default=None, help="training steps (overrides the config)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--import_checkpoint", default=None,
        help="instead of training: check that this published vocoder loads and write it into OUTDIR",
    )
    parser.add_argument("--import_config", default=None, help="config.json of --import_checkpoint (default: beside it)")
    return parser


def training_config(args: argparse.Namespace) -> VocoderConfig:
    values = VocoderConfig.from_file(args.config).to_dict()
    if args.num_embeddings is not None:
        values["num_embeddings"] = args.num_embeddings
    if args.max_steps is not None:
        values["max_steps"] = args.max_steps
    if values["multispkr"] and not values["speakers"]:
        names = {speaker for path in args.data_dirs for speaker in DataDir(path).utt2spk.values()}
        values["speakers"] = sorted(names)
        if len(names) > values["num_speakers"]:
            raise VocoderConfigError(f"{args.config}: num_speakers {values['num_speakers']} < {len(names)} speakers in the data")
    return VocoderConfig.from_dict(values, source=args.config)


def main(argv: list[str] | None = None) -> int:
    setup_logging()
    parser = get_parser()
    args = parser.parse_args(argv)
    try:
        if args.import_checkpoint:
            generator = load_generator(args.import_checkpoint, args.import_config)
            save_published(generator, f"{args.outdir}/{GENERATOR_NAME}")
            logging.info("imported %s into %s/%s", args.import_checkpoint, args.outdir, GENERATOR_NAME)
            return 0
        if not args.config or not args.data_dirs:
            parser.error("training needs --config and --data_dirs (or use --import_checkpoint)")
        trainer = VocoderTrainer(training_config(args), args.outdir, args.device)
        trainer.resume()
        trainer.train(args.data_dirs)
    except (VocoderConfigError, DataDirError, AudioError, FileNotFoundError) as error:
        logging.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
