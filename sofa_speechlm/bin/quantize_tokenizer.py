"""Post-training quantization of the HuBERT speech tokenizer: StableQuant and its baselines.

    python -m sofa_speechlm.bin.quantize_tokenizer --hubert_ckpt hubert_base_ls960.pt --layer 6 \
        --kmeans_file exp/kmeans/hubert_l6_km200/km.npy --data_dir data/dev/speechlm \
        --dev_data_dir data/dev/asr --test_data_dir data/test/asr --output_dir exp/tokenizer_ptq

Calibration histograms come from --data_dir; Algorithm 1 and 2 of StableQuant score candidates
on --dev_data_dir by the unit error rate (UER: % of 50 Hz frames whose unit differs from the
full-precision tokenizer's), or with --exp_dir (a stage-4 LM experiment) by that LM's greedy
ASR WER on the dev units (the first --asr_max_utts dev utterances, against their text) in WER
points above its WER on the full-precision units, as the paper's WER. Writes <output_dir>/<method>_<setting>_<scope>/ (a quantized
tokenizer: tokenizer_config.yaml + .done) per method x setting x scope, and report.md,
report.json, activation_ranges.png in <output_dir>. Units of data dirs with a quantized
tokenizer: python -m sofa_speechlm.bin.quantized_units. See docs/tokenizer_ptq.md.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

import torch

from sofa_speechlm.bin import add_log_level, setup_logging
from sofa_speechlm.data import DataDirError
from sofa_speechlm.quant.tokenizer.apply import SETTINGS, parse_setting, simulated
from sofa_speechlm.quant.tokenizer.asr import AsrWordErrorRate, dev_texts
from sofa_speechlm.quant.tokenizer.audio import sample_waveforms
from sofa_speechlm.quant.tokenizer.calibrators import METHODS
from sofa_speechlm.quant.tokenizer.evaluation import UnitErrorRate, extraction_ms_per_second
from sofa_speechlm.quant.tokenizer.io import load_quantized_tokenizer, save_quantized_tokenizer
from sofa_speechlm.quant.tokenizer.layers import SCOPES, quantizable_layers
from sofa_speechlm.quant.tokenizer.report import RANGES_PNG, activation_summary, parameter_bytes, plot_ranges, write_report
from sofa_speechlm.quant.tokenizer.stablequant import DEFAULT_GAMMA, DEFAULT_P_MAX, DEFAULT_P_STEP, calibrate, check_gamma, percentile_grid
from sofa_speechlm.quant.tokenizer.statistics import DEFAULT_BINS, activation_histograms, weight_channel_ranges
from sofa_speechlm.speech.fairseq_checkpoint import CheckpointError
from sofa_speechlm.speech.hubert import HubertFeatureReader
from sofa_speechlm.speech.kmeans import KmeansQuantizer


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hubert_ckpt", default="", help="fairseq HuBERT .pt or HuggingFace HuBERT dir (MFCC tokenizers have nothing to quantize)")
    parser.add_argument("--layer", type=int, default=6, help="HuBERT layer whose output the k-means model clusters")
    parser.add_argument("--kmeans_file", required=True, help="k-means model of that layer (km.npy or fairseq km.bin)")
    parser.add_argument("--data_dir", nargs="+", required=True, help="calibration data dirs (wav.scp)")
    parser.add_argument("--dev_data_dir", nargs="+", required=True, help="dev data dirs: the UER of Algorithms 1 and 2")
    parser.add_argument("--test_data_dir", nargs="+", default=[], help="held-out data dirs: UER reported, never used for choices")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), help=f"calibration methods: {', '.join(METHODS)}")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), help=f"settings (symmetric): {', '.join(SETTINGS)}")
    parser.add_argument("--scope", nargs="+", default=["all"], help="transformer (transformer layers only) and/or all (CNN feature extractor too)")
    parser.add_argument("--exp_dir", default="", help="stage-4 LM experiment dir (exp/lm_<name>): Algorithms 1 and 2 use its dev ASR WER instead of the UER")
    parser.add_argument("--asr_max_utts", type=int, default=20, help="with --exp_dir: dev utterances decoded for the ASR WER (the first N by id)")
    parser.add_argument("--asr_max_new_tokens", type=int, default=100, help="with --exp_dir: longest ASR transcript in tokens (greedy)")
    parser.add_argument("--batch_size", type=int, default=16, help="with --exp_dir: utterances decoded together")
    parser.add_argument("--gamma", type=float, default=DEFAULT_GAMMA,
                        help="Algorithm 1 threshold: dev UER points (ASR WER points with --exp_dir) a layer may cost alone before it is clipped")
    parser.add_argument("--p_max", type=float, default=DEFAULT_P_MAX, help="largest cut-off percentile p searched (percent of values; the paper: 0.5)")
    parser.add_argument("--p_step", type=float, default=DEFAULT_P_STEP, help="step of the p grid (the paper: 0.01)")
    parser.add_argument("--bins", type=int, default=DEFAULT_BINS, help="histogram bins per layer")
    parser.add_argument("--num_calib_utts", type=int, default=100, help="calibration utterances drawn from --data_dir")
    parser.add_argument("--num_dev_utts", type=int, default=100, help="dev (and test) utterances drawn from --dev_data_dir (--test_data_dir)")
    parser.add_argument("--min_calib_seconds", type=float, default=2.0, help="least calibration audio accepted")
    parser.add_argument("--execution", default="auto", choices=["auto", "real", "simulated"],
                        help="how the saved tokenizers are measured: auto = int8 kernels for W8A8 linears where available")
    parser.add_argument("--timing_repeats", type=int, default=3, help="timed passes over the dev audio per tokenizer (the best counts)")
    parser.add_argument("--output_dir", required=True, help="quantized tokenizer dirs and the report")
    parser.add_argument("--device", default="cpu", help="torch device")
    parser.add_argument("--seed", type=int, default=0, help="seed of the utterance sampling")
    parser.add_argument("--num_threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    add_log_level(parser)
    return parser


def check_options(args, parser) -> list[float]:
    """Every option checked before the model loads; returns the p grid."""
    if not args.hubert_ckpt:
        parser.error("--hubert_ckpt is empty: tokenizer quantization applies to a HuBERT tokenizer only (MFCC features have no model to quantize)")
    for method in args.methods:
        if method not in METHODS:
            parser.error(f"--methods {method!r}: expected one of {', '.join(METHODS)}")
    for scope in args.scope:
        if scope not in SCOPES:
            parser.error(f"--scope {scope!r}: expected one of {', '.join(SCOPES)}")
    if args.timing_repeats < 1:
        parser.error(f"--timing_repeats {args.timing_repeats}: expected at least 1")
    if args.exp_dir and not Path(args.exp_dir).is_dir():
        parser.error(f"--exp_dir {args.exp_dir}: not a directory (a stage-4 LM experiment, exp/lm_<name>)")
    for name in ("asr_max_utts", "asr_max_new_tokens", "batch_size"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} {getattr(args, name)}: expected at least 1")
    if args.bins < 16:
        parser.error(f"--bins {args.bins}: expected at least 16")
    try:
        for setting in args.settings:
            parse_setting(setting)
        check_gamma(args.gamma)
        return percentile_grid(args.p_max, args.p_step)
    except ValueError as error:
        parser.error(str(error))


def variant_name(method: str, setting: str, scope: str) -> str:
    return f"{method}_{setting.lower()}_{scope}"


def run(args, grid) -> dict:
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    reader = HubertFeatureReader(args.hubert_ckpt, layer=args.layer, device=args.device)
    kmeans = KmeansQuantizer.load(args.kmeans_file, device=args.device)
    if kmeans.centres.shape[1] != reader.dim:
        raise ValueError(f"--kmeans_file {args.kmeans_file}: {kmeans.centres.shape[1]}-dim centres, but layer {args.layer} "
                         f"of {args.hubert_ckpt} gives {reader.dim}-dim features")
    audio = dict(sample_rate=reader.sample_rate, min_samples=reader.min_samples)
    calib = list(sample_waveforms(args.data_dir, args.num_calib_utts, args.seed, option="--data_dir", min_seconds=args.min_calib_seconds, **audio).values())
    dev_waveforms = sample_waveforms(args.dev_data_dir, args.num_dev_utts, args.seed, option="--dev_data_dir", **audio)
    dev = list(dev_waveforms.values())
    test = list(sample_waveforms(args.test_data_dir, args.num_dev_utts, args.seed, option="--test_data_dir", **audio).values()) if args.test_data_dir else []
    dev_uer = UnitErrorRate(reader, kmeans, dev)
    dev_asr = None  # with --exp_dir: the LM's dev ASR WER is the dev metric of Algorithms 1 and 2
    if args.exp_dir:
        keys = list(dev_waveforms)
        dev_asr = AsrWordErrorRate(dev_uer, keys, dev_texts(args.dev_data_dir, keys), args.exp_dir, args.asr_max_utts,
                                   args.asr_max_new_tokens, args.batch_size, args.device)
    dev_metric = dev_asr or dev_uer
    test_uer = UnitErrorRate(reader, kmeans, test) if test else None
    fp_ms = extraction_ms_per_second(reader, dev, args.timing_repeats)
    fp_bytes = parameter_bytes(reader.model)

    all_layers = quantizable_layers(reader.model, "all", args.hubert_ckpt)
    hists = activation_histograms(reader, all_layers, calib, bins=args.bins)
    plot_ranges(output_dir / RANGES_PNG, hists, weight_channel_ranges(all_layers))
    rows = []
    for scope in args.scope:
        layers = quantizable_layers(reader.model, scope, args.hubert_ckpt)
        for setting in args.settings:
            weight_bits, act_bits = parse_setting(setting)
            for method in args.methods:
                name = variant_name(method, setting, scope)
                logging.info("%s: calibrating %d layers", name, len(layers))
                plan, details = calibrate(method, layers, {n: hists[n] for n in layers}, weight_bits, act_bits,
                                          evaluate=dev_metric, gamma=args.gamma, grid=grid)
                with simulated(layers, plan):
                    simulated_uer = dev_uer()
                variant_dir = save_quantized_tokenizer(output_dir / name, plan, hubert_ckpt=args.hubert_ckpt, layer=args.layer,
                                                       kmeans_file=args.kmeans_file, method=method, setting=setting,
                                                       scope=scope, details=details)
                tokenizer = load_quantized_tokenizer(variant_dir, args.device, args.execution)
                row = {
                    "variant": name, "scope": scope, "setting": setting.upper(), "method": method,
                    "dev_uer": dev_uer(tokenizer),
                    "dev_uer_simulated": simulated_uer, "dev_dedup_uer": dev_uer.deduplicated(tokenizer),
                    "test_uer": test_uer(tokenizer) if test_uer else None,
                    "execution": tokenizer.execution,
                    "size_mb": parameter_bytes(reader.model, layers, weight_bits) / 1e6,
                    "ms_per_audio_s": extraction_ms_per_second(tokenizer, dev, args.timing_repeats),
                    "selected": details.get("selected", []), "p_opt": details.get("p_opt"),
                    "percentiles": plan.percentiles, "clips": plan.clips,
                    "selection_uer": details.get("selection_uer", {}), "p_curve": details.get("p_curve", {}),
                }
                if dev_asr:  # Algorithm 1's deltas and Algorithm 2's curve are in ASR WER points above full precision
                    row["dev_asr_wer"] = dev_asr.wer(tokenizer)
                    row["selection_asr_wer"] = details.get("selection_asr_wer", {})
                row["size_ratio"] = row["size_mb"] * 1e6 / fp_bytes
                row["speedup"] = fp_ms / row["ms_per_audio_s"]
                rows.append(row)
                logging.info("%s: dev UER %.2f%% (%s), size %.3f MB (%.2fx fp), %.2fx fp speed -> %s", name, row["dev_uer"],
                             row["execution"], row["size_mb"], row["size_ratio"], row["speedup"], variant_dir)
    return {
        "hubert_ckpt": str(args.hubert_ckpt), "layer": args.layer, "kmeans_file": str(args.kmeans_file), "n_clusters": kmeans.n_clusters,
        "gamma": args.gamma, "p_max": args.p_max, "p_step": args.p_step, "bins": args.bins,
        "calibration": {"utterances": len(calib), "seconds": sum(map(len, calib)) / reader.sample_rate},
        "dev": {"utterances": len(dev), "frames": dev_uer.frames},
        "test": {"utterances": len(test), "frames": test_uer.frames} if test_uer else None,
        "full_precision": {"size_mb": fp_bytes / 1e6, "ms_per_audio_s": fp_ms},
        "dev_metric": dev_metric.name,
        "asr": {"exp_dir": str(args.exp_dir), "utterances": dev_asr.utterances, "max_new_tokens": args.asr_max_new_tokens,
                "full_precision_wer": dev_asr.fp_wer} if dev_asr else None,
        "activations": activation_summary(hists), "rows": rows,
    }


def main(argv: list[str] | None = None) -> None:
    parser = get_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    grid = check_options(args, parser)
    if args.num_threads > 0:
        torch.set_num_threads(args.num_threads)
    try:
        report = run(args, grid)
    except (CheckpointError, DataDirError, ValueError, FileNotFoundError) as error:
        raise SystemExit(f"quantize_tokenizer: error: {error}") from None
    json_file, md_file = write_report(Path(args.output_dir), report)
    logging.info("report: %s, %s, %s", md_file, json_file, Path(args.output_dir) / RANGES_PNG)


if __name__ == "__main__":
    main()
