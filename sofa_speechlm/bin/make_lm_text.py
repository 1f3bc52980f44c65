"""Writes the task-formatted LM text of one split (textlm, speechlm, asr, tts templates).

Reads `<split_dir>/<task>` data dirs (text and/or units) and writes `<output_dir>/<task>.txt`
and `<out_dir>/all.txt`; units are written as single characters (U+4E00 + id).
"""

from __future__ import annotations

import argparse

from sofa_speechlm.data import DataDirError
from sofa_speechlm.text.lm_text import write_lm_text
from sofa_speechlm.text.templates import TASKS
from sofa_speechlm.bin import add_log_level, setup_logging


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--split_dir", required=True, help="e.g. data/train, holding one data dir per task")
    parser.add_argument("--output_dir", required=True, help="e.g. dump/lm_text/train")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS, help="tasks to write")
    parser.add_argument("--units_file", default="units", help="units file of the speech data dirs (units or units_dedup)")
    add_log_level(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = get_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        write_lm_text(args.split_dir, args.output_dir, args.tasks, args.units_file)
    except (DataDirError, ValueError) as error:
        raise SystemExit(f"make_lm_text: error: {error}") from None


if __name__ == "__main__":
    main()
