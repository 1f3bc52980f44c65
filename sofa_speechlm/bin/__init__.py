"""One `python -m sofa_speechlm.bin.<step>` command-line entry point per pipeline step.

Every step has `get_parser()` (its argparse parser) and `main(argv)`; option names follow one
convention across steps (test/test_cli_family.py lists and checks them).
"""

import argparse
import logging

LOG_FORMAT = "%(asctime)s (%(module)s:%(lineno)d) %(levelname)s: %(message)s"
LOG_LEVELS = ("ERROR", "WARNING", "INFO", "DEBUG")


def setup_logging(level: int | str = logging.INFO) -> None:
    """ESPnet's log format, so the recipe's logs read alike whichever step wrote them."""
    logging.basicConfig(level=level, format=LOG_FORMAT)


def add_log_level(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The `--log_level` option every step has (passed to `setup_logging`)."""
    parser.add_argument("--log_level", default="INFO", type=str.upper, choices=LOG_LEVELS, help="logging level")
    return parser
