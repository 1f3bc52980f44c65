"""Table of the stage-5 variants under one or more ``ptq`` dirs: size, time, execution.

    python -m sofa_speechlm.bin.ptq_summary exp/lm_tiny_sofa_full/ptq exp/lm_tiny_vanilla_full/ptq

Reads only quant_config.yaml files (no torch import), so the recipe can print it cheaply.
"""
from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path

import yaml

from sofa_speechlm.bin import add_log_level, setup_logging

COLUMNS = ["lm", "variant", "method", "setting", "execution", "size_mb", "time_s", "complete"]


def dir_size(path) -> int:
    """Bytes of all files under ``path``."""
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


def summary_rows(ptq_dirs) -> list[dict]:
    """One row per variant dir (with a quant_config.yaml) under the given ``ptq`` dirs."""
    rows = []
    for ptq_dir in map(Path, ptq_dirs):
        if not ptq_dir.is_dir():
            raise FileNotFoundError(f"{ptq_dir}: no such ptq dir (stage 5 writes it)")
        for variant_dir in sorted(p for p in ptq_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            config_file = variant_dir / "quant_config.yaml"
            if not config_file.is_file():
                continue
            record = yaml.safe_load(config_file.read_text())
            rows.append({"lm": ptq_dir.parent.name, "variant": variant_dir.name, "method": record["method"],
                         "setting": record["setting"], "execution": record["execution"],
                         "size_mb": round(dir_size(variant_dir) / 2**20, 3), "time_s": record.get("time_s"),
                         "complete": (variant_dir / ".done").is_file()})
    return rows


def format_table(rows) -> str:
    table = [COLUMNS] + [[str(row[k]) for k in COLUMNS] for row in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip() for r in table)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ptq_dirs", nargs="+", help="exp/lm_<name>/ptq dirs")
    add_log_level(parser)
    return parser


def main(cmd=None) -> None:
    args = get_parser().parse_args(cmd)
    setup_logging(args.log_level)
    rows = summary_rows(args.ptq_dirs)
    logging.info(f"{len(rows)} variants under {len(args.ptq_dirs)} ptq dirs")
    print(format_table(rows))


if __name__ == "__main__":
    main()
