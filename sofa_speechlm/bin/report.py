"""Stage-6 report of one or more experiment dirs: RESULTS.md, results.json and plots/*.png.

    python -m sofa_speechlm.bin.report --exp_dir exp                     # -> exp/RESULTS.md ...
    python -m sofa_speechlm.bin.report --compare exp_sofa exp_vanilla --output_dir exp_cmp

Reads every exp/lm_*/eval/<variant>/scores.json and outliers.json, exp/eval/reference/*/scores.json
and, from stage 2c's quantized tokenizers, exp/lm_*/eval_tokenizer_ptq/<tokenizer>/<variant>/scores.json
with exp/tokenizer_ptq/<tokenizer>/report.json (CONTRACTS.md); a missing or malformed file is reported
under "Problems", the rest still is.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from sofa_speechlm.bin import add_log_level, setup_logging
from sofa_speechlm.eval.report import (
    ATTENTION_LABELS, FINETUNE_LABELS, FP_VARIANT, METHOD_LABELS, lm_base, build_results, collect, fmt_bits, render_markdown,
)

MAX_ATTENTION_PANELS = 4


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--exp_dir", help="experiment dir of run.sh (holds lm_*/eval/*/scores.json)")
    group.add_argument("--compare", nargs="+", metavar="EXP_DIR", help="several experiment dirs in one table")
    parser.add_argument("--output_dir", default=None, help="where RESULTS.md, results.json, plots/ go (default: the (first) experiment dir)")
    parser.add_argument("--no_plots", action="store_true", help="tables only")
    add_log_level(parser)
    return parser


def _label(entry: dict) -> str:
    return f"{entry['key']} ({ATTENTION_LABELS.get(entry.get('attention'), entry.get('attention'))})"


def make_plots(results: dict, found, plot_dir: Path) -> list:
    """Every plot the data allows; returns their paths."""
    from sofa_speechlm.eval import plots

    plot_dir.mkdir(parents=True, exist_ok=True)
    made = []
    if found.outliers:
        made.append(plots.plot_outliers([(_label(o), o) for o in found.outliers], plot_dir / "outliers.png"))
        per_task = {}
        entries = [o for o in found.outliers if o.get("variant") == FP_VARIANT] or found.outliers
        for o in entries[:MAX_ATTENTION_PANELS]:
            meta = o.get("attention_maps") or {}
            npz = Path(o["path"]).parent / meta.get("file", "")
            if not meta.get("tasks") or not npz.is_file():
                found.problems.append(f"{o['path']}: no attention maps ({npz} missing)")
                continue
            with np.load(npz) as arrays:
                for task, info in meta["tasks"].items():
                    if task in arrays:
                        label = _label(o)
                        if "window" in info and info["window"][1] - info["window"][0] < info.get("length", 0):
                            label += f" [tokens {info['window'][0]}-{info['window'][1]} of {info['length']}]"
                        weights = arrays[task]
                        sums = (info.get("row_sum_min", float(weights.sum(1).min())), info.get("row_sum_mean", float(weights.sum(1).mean())))
                        per_task.setdefault(task, []).append((label, weights, info["tokens"], o.get("attention"), sums))
        for task, maps in per_task.items():
            made.append(plots.plot_attention(task, maps, plot_dir / f"attention_{task}.png"))
    drops = []
    for row in results["rows"]:
        if row["avg_drop"] is None:
            continue
        parts = [FINETUNE_LABELS.get(row["finetune"], row["finetune"])] if row.get("finetune") != "full" else []
        if row["variant"] != FP_VARIANT:
            parts += [fmt_bits(row.get("setting")), METHOD_LABELS.get(row.get("method"), row.get("method") or row["variant"])]
        drops.append({"group": " ".join(parts) or row["variant"], "drop": row["avg_drop"],
                      "model": f"{lm_base(row)} {ATTENTION_LABELS.get(row.get('attention'), row.get('attention'))}"})
    if drops:
        made.append(plots.plot_drops(drops, plot_dir / "drops.png"))
    return made


def main(cmd=None):
    args = get_parser().parse_args(cmd)
    setup_logging(args.log_level)
    exp_dirs = [Path(e) for e in (args.compare or [args.exp_dir])]
    output_dir = Path(args.output_dir) if args.output_dir else exp_dirs[0]
    found = collect(exp_dirs)
    results = build_results(found)
    plot_paths = [] if args.no_plots else make_plots(results, found, output_dir / "plots")
    results["problems"] = list(found.problems)
    results["plots"] = [str(p.relative_to(output_dir)) for p in plot_paths]
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    (output_dir / "RESULTS.md").write_text(render_markdown(results, results["plots"]), encoding="utf-8")
    for problem in results["problems"]:
        logging.warning(problem)
    logging.info(f"{len(results['rows'])} evaluated models; wrote {output_dir / 'RESULTS.md'}, {output_dir / 'results.json'}, {len(plot_paths)} plots")


if __name__ == "__main__":
    main()
