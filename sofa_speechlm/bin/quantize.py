"""Post-training quantization of a stage-4 LM (stage 5): every requested method x setting.

    python -m sofa_speechlm.bin.quantize --exp_dir exp/lm_tiny_sofa_full \\
        --output_dir exp/lm_tiny_sofa_full/ptq --methods rtn smoothquant --settings W8A8 W4A4 \\
        --ptq_config conf/ptq/tiny.yaml --lm_text_dir dump/lm_text/train

Writes one dir per variant (``<output_dir>/<method>_<setting>/``, see sofa_speechlm.quant.io);
finished variants are skipped; a failing variant is removed, the others still run, and the
exit status is non-zero. ``python -m sofa_speechlm.bin.ptq_summary DIR ...`` prints the table.
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


from sofa_speechlm.bin import add_log_level, setup_logging

CALIBRATION_DEFAULTS = {"nsamples": 128, "seqlen": 512, "batch_size": 16, "seed": 0}


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp_dir", help="stage-4 LM experiment dir (its merged/ export when present)")
    parser.add_argument("--train_config", help="config.yaml of the LM (instead of --exp_dir)")
    parser.add_argument("--model_file", help="full-weight .pth of the LM (with --train_config)")
    parser.add_argument("--output_dir", help="the LM's ptq dir; one sub-dir per variant")
    parser.add_argument("--methods", nargs="+", default=["rtn", "smoothquant"],
                        help="registered methods or presets of --ptq_config (e.g. rtn smoothquant smoothquant_clip1)")
    parser.add_argument("--settings", nargs="+", default=["W8A8", "W4A4"], help="bit settings: W8A8 W4A4 W4A16 W8A16 W6A6")
    parser.add_argument("--ptq_config", default=None, help="YAML: calibration, extra_settings, presets, methods")
    parser.add_argument("--lm_text_dir", default="dump/lm_text/train", help="stage-3 training LM text (<task>.txt)")
    parser.add_argument("--calib_nsamples", type=int, default=None, help="calibration windows (default: ptq_config, else 128)")
    parser.add_argument("--calib_seqlen", type=int, default=None, help="tokens per window (default: ptq_config, else 512)")
    parser.add_argument("--calib_batch_size", type=int, default=None, help="windows per batch (default: ptq_config, else 16)")
    parser.add_argument("--seed", type=int, default=None, help="calibration sampling seed (default: ptq_config, else 0)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda")
    add_log_level(parser)
    return parser


def _calibration_options(args, ptq_config: dict) -> dict:
    options = {**CALIBRATION_DEFAULTS, **(ptq_config.get("calibration") or {})}
    for key, value in (("nsamples", args.calib_nsamples), ("seqlen", args.calib_seqlen),
                       ("batch_size", args.calib_batch_size), ("seed", args.seed)):
        if value is not None:
            options[key] = value
    return options


def _find_experiment(args):
    from sofa_speechlm.lm.experiment import LMExperiment

    if args.train_config or args.model_file:
        if not (args.train_config and args.model_file):
            raise ValueError("--train_config and --model_file go together")
        for path in (args.train_config, args.model_file):
            if not Path(path).is_file():
                raise FileNotFoundError(f"{path} not found")
        return LMExperiment(Path(args.train_config).parent, Path(args.train_config), Path(args.model_file))
    if args.exp_dir:
        return LMExperiment.find(args.exp_dir)
    raise ValueError("give --exp_dir (or --train_config with --model_file)")


def main(cmd=None) -> None:
    args = get_parser().parse_args(cmd)
    setup_logging(args.log_level)
    from sofa_speechlm.quant.plan import plan_variants, read_ptq_config
    from sofa_speechlm.bin.ptq_summary import format_table, summary_rows
    from sofa_speechlm.quant.runner import is_up_to_date, run_all, sha256_of_file, sha256_of_lines

    if not args.output_dir:
        raise ValueError("--output_dir is required")
    ptq_config = read_ptq_config(args.ptq_config)
    variants = plan_variants(args.methods, args.settings, ptq_config)
    output_dir = Path(args.output_dir)
    experiment = _find_experiment(args)
    source = {"exp_dir": str(experiment.exp_dir), "train_config": str(experiment.train_config),
              "model_file": str(experiment.model_file), "model_sha256": sha256_of_file(experiment.model_file)}
    calibration_options = _calibration_options(args, ptq_config)
    todo = [v for v in variants if not is_up_to_date(output_dir / v.name, v, source, calibration_options)]
    logging.info(f"{len(variants)} variant(s): {', '.join(v.name for v in variants)}; {len(todo)} to do")
    if not todo:
        print(format_table(summary_rows([output_dir])))
        return

    model, train_args = experiment.load("cpu")
    source["token_list_sha256"] = sha256_of_lines(train_args.token_list)
    calibration, record = [], None
    if any(type(v.config).needs_calibration for v in todo):
        calibration, record = _build_calibration(args, ptq_config, train_args)
    failed = run_all(model, todo, output_dir, calibration, record, source, args.device)
    print(format_table(summary_rows([output_dir])))
    if failed:
        logging.error(f"{len(failed)} variant(s) failed: {', '.join(failed)}")
        sys.exit(1)


def _build_calibration(args, ptq_config, train_args):
    from espnet2.text.build_tokenizer import build_tokenizer
    from espnet2.text.token_id_converter import TokenIDConverter

    from sofa_speechlm.quant.calibration_data import lm_text_calibration

    options = _calibration_options(args, ptq_config)
    if not Path(train_args.bpemodel or "").is_file():
        raise FileNotFoundError(f"calibration: the LM's sentencepiece model '{train_args.bpemodel}' not found")
    tokenizer = build_tokenizer(token_type=train_args.token_type, bpemodel=train_args.bpemodel)
    converter = TokenIDConverter(token_list=train_args.token_list)
    batches, record = lm_text_calibration(
        args.lm_text_dir, lambda line: converter.tokens2ids(tokenizer.text2tokens(line)),
        len(train_args.token_list) - 1, **options)
    logging.info(f"calibration: {len(batches)} batch(es), {record['nsamples']} x {record['seqlen']} tokens, "
                 f"sha256 {record['sha256'][:12]}")
    return batches, record


if __name__ == "__main__":
    main()
