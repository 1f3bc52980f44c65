"""Drop-in study: a pretrained text LM with each attention normalizer swapped in, no training.

Scores the sentences of a Kaldi `text` file (default: the embedded corpus's textLM test set)
with the pretrained model and its own tokenizer, once per normalizer, and writes
<output_dir>/{dropin_study.json, README.md, perplexity.png, outliers.png}: text perplexity
per normalizer, per-layer outlier statistics (max infinity norm, mean kurtosis), and the
perplexity drop of PTQ variants (--ptq, e.g. RTN and SmoothQuant at W8A8 and W4A4).

    python -m sofa_speechlm.bin.dropin_study --pretrained_lm smollm2 --output_dir exp/dropin_smollm2
"""

import argparse
import json
import logging
import time
from pathlib import Path

import torch
from espnet2.utils.types import str2bool

from sofa_speechlm.attention import hf_normalizers
from sofa_speechlm.bin import add_log_level, setup_logging
from sofa_speechlm.data.kaldi import read_table
from sofa_speechlm.lm.backbone import load_pretrained
from sofa_speechlm.lm.dropin_study import calibration_windows, run_ptq, run_study, tokenize
from sofa_speechlm.lm.offline_models import OFFLINE_MODELS, resolve_pretrained


def read_sentences(text: Path, lowercase: bool, limit: int, option: str = "--text") -> list:
    if not text.is_file():
        raise FileNotFoundError(f"{option} {text} does not exist (run stage 1, or give a Kaldi text file)")
    sentences = [line for line in read_table(text).values() if line.strip()]
    if not sentences:
        raise ValueError(f"{option} {text} holds no sentence")
    sentences = sentences[:limit] if limit > 0 else sentences
    return [s.lower() if lowercase else s for s in sentences]


def plot(results: dict, output_dir: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    fig, ax = plt.subplots(figsize=(7, 3.5))
    values = [results[n]["perplexity"] for n in names]
    bars = ax.bar(names, values, color=["tab:gray" if n == "softmax" else "tab:blue" for n in names])
    ax.bar_label(bars, labels=[f"{v:.1f}" for v in values], fontsize=8)
    ax.set_yscale("log")
    ax.tick_params(axis="x", labelrotation=20)
    ax.set_ylabel("text perplexity (log scale)")
    ax.set_title(f"{title}: normalizer swapped in, no training", fontsize=9)
    fig.tight_layout()
    fig.savefig(output_dir / "perplexity.png", dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for name in names:
        per_layer = results[name]["outliers"]["per_layer"]
        axes[0].plot(per_layer["max_inf_norm"], marker=".", label=name)
        axes[1].plot(per_layer["mean_kurtosis"], marker=".", label=name)
    for ax, label in zip(axes, ["max infinity norm (max over modules)", "mean kurtosis (over modules)"]):
        ax.set_yscale("log")
        ax.set_xlabel("decoder layer")
        ax.set_ylabel(label)
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle(f"{title}: activation outliers per layer (layer output, o_proj, down_proj, norms)", fontsize=9)
    fig.tight_layout()
    fig.savefig(output_dir / "outliers.png", dpi=120)
    plt.close(fig)


def markdown(study: dict) -> str:
    results = study["results"]
    base = results.get("softmax", {}).get("perplexity")
    lines = [
        f"# Drop-in study: {study['model']}",
        "",
        f"Model: {study['model_description']}.",
        "",
        f"Text: {study['sentences']} sentences of `{study['text']}`"
        f"{' (lower-cased)' if study['lowercase'] else ''}, {study['tokens']} scored tokens of the model's own "
        f"tokenizer, each sentence after `{study['prefix_token']}`. No training: every normalizer is swapped into "
        f"the same pretrained weights. Measured in {study['time_s']:.0f} s on {study['device']} "
        f"({study['threads']} thread(s)).",
        "",
        "| normalizer | text PPL | vs softmax | max inf-norm | (module) | mean kurtosis | max kurtosis |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, result in results.items():
        summary = result["outliers"]["summary"]
        ratio = f"{result['perplexity'] / base:.2f}x" if base else "-"
        lines.append(
            f"| {name} | {result['perplexity']:.2f} | {ratio} | {summary['max_inf_norm']:.1f} | "
            f"{summary['max_inf_norm_module']} | {summary['mean_kurtosis']:.1f} | {summary['max_kurtosis']:.1f} |"
        )
    lines += [
        "",
        "Outliers follow sofa_speechlm.eval.outliers: per sequence, the infinity norm and kurtosis of each "
        "decoder layer's output, attention output projection, FFN output projection and norms; "
        "'max inf-norm' is the largest per-module mean over sequences.",
        "",
        "![perplexity](perplexity.png)",
        "",
        "![outliers](outliers.png)",
        "",
    ]
    if study.get("ptq"):
        calibration = study["calibration"]
        lines += [
            f"PTQ of the text model (sofa_speechlm.quant, simulated; calibration: {calibration['windows']} windows of "
            f"{calibration['length']} tokens of `{calibration['text']}`)."
            + (f" The weights had already been through {study['weight_history']}, so weight-quantization drops "
               "start from already-rounded weights." if study.get("weight_history") else ""),
            "",
            "| normalizer | FP PPL | " + " | ".join(next(iter(study["ptq"].values()))) + " |",
            "|---|---|" + "---|" * len(next(iter(study["ptq"].values()))),
        ]
        for normalizer, variants in study["ptq"].items():
            fp = results[normalizer]["perplexity"]
            cells = [f"{ppl:.2f} ({100 * (ppl / fp - 1):+.1f}%)" for ppl in variants.values()]
            lines.append(f"| {normalizer} | {fp:.2f} | " + " | ".join(cells) + " |")
        lines.append("")
    shown = [n for n in ("softmax", "sofa") if n in results]
    if shown:
        lines += [
            "Per layer (max inf-norm over modules / mean kurtosis over modules):",
            "",
            "| layer | " + " | ".join(f"{n} inf-norm | {n} kurtosis" for n in shown) + " |",
            "|---|" + "---|---|" * len(shown),
        ]
        per_layer = {n: results[n]["outliers"]["per_layer"] for n in shown}
        for index in range(len(per_layer[shown[0]]["max_inf_norm"])):
            cells = [f"{per_layer[n]['max_inf_norm'][index]:.1f} | {per_layer[n]['mean_kurtosis'][index]:.1f}" for n in shown]
            lines.append(f"| {index} | " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pretrained_lm", default="smollm2", help=f"HF dir or offline model ({', '.join(OFFLINE_MODELS)})")
    parser.add_argument("--text", type=Path, default=Path("data/test/textlm/text"), help="Kaldi text file to score")
    parser.add_argument("--lowercase", type=str2bool, default=True,
                        help="lower-case the (upper-case, LibriSpeech-style) transcripts: true|false")
    parser.add_argument("--max_sentences", type=int, default=0, help="score only the first N sentences (0: all)")
    parser.add_argument("--normalizers", nargs="+", default=list(hf_normalizers()), choices=list(hf_normalizers()))
    parser.add_argument("--prefix_token", default="<|endoftext|>", help="token before each sentence (not scored)")
    parser.add_argument("--ptq", nargs="*", default=["rtn:W8A8", "smoothquant:W8A8", "rtn:W4A4", "smoothquant:W4A4"],
                        help="PTQ variants method:setting whose perplexity drop is measured ('none': no PTQ)")
    parser.add_argument("--ptq_normalizers", nargs="+", default=["softmax", "sofa"], choices=list(hf_normalizers()),
                        help="normalizers the PTQ variants are measured with")
    parser.add_argument("--calib_text", type=Path, default=Path("data/train/textlm/text"),
                        help="Kaldi text file of the PTQ calibration sentences (not the scored ones)")
    parser.add_argument("--calib_nsamples", type=int, default=16, help="calibration windows of --calib_seqlen tokens")
    parser.add_argument("--calib_seqlen", type=int, default=128, help="tokens per calibration window")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output_dir", type=Path, required=True)
    add_log_level(parser)
    return parser


def parse_ptq(args) -> list:
    """(method, setting) pairs of --ptq, checked before any model is loaded."""
    from sofa_speechlm.quant import make_config

    variants = [tuple(v.split(":", 1)) for v in args.ptq if v != "none"]
    if any(len(v) != 2 for v in variants):
        raise ValueError(f"--ptq: expected method:setting entries such as smoothquant:W4A4, got {args.ptq}")
    for method, setting in variants:
        make_config(method, setting)  # names the unknown method or setting
    missing = sorted(set(args.ptq_normalizers) - set(args.normalizers)) if variants else []
    if missing:
        raise ValueError(f"--ptq_normalizers {missing} must also be in --normalizers (their FP perplexity is the baseline)")
    return variants


def main(cmd=None) -> None:
    args = get_parser().parse_args(cmd)
    setup_logging(args.log_level)
    from transformers import AutoTokenizer

    variants = parse_ptq(args)
    sentences = read_sentences(args.text, args.lowercase, args.max_sentences)
    calibration_sentences = read_sentences(args.calib_text, args.lowercase, 0, "--calib_text") if variants else []
    directory = resolve_pretrained(args.pretrained_lm)
    model = load_pretrained(args.pretrained_lm).to(args.device).eval()
    tokenizer = AutoTokenizer.from_pretrained(directory)
    sequences = tokenize(tokenizer, sentences, args.prefix_token)
    start = time.perf_counter()
    results = run_study(model, sequences, args.normalizers, args.batch_size, args.device)
    ptq = {}
    if variants:
        calibration = calibration_windows(
            tokenize(tokenizer, calibration_sentences, args.prefix_token), args.calib_seqlen, args.calib_nsamples
        )
        ptq = run_ptq(lambda: load_pretrained(args.pretrained_lm).eval(), sequences, calibration,
                      args.ptq_normalizers, variants, args.batch_size, args.device)
    entry = OFFLINE_MODELS.get(args.pretrained_lm)
    study = dict(
        model=args.pretrained_lm, model_description=entry.description if entry else f"HF dir {directory}",
        weight_history=entry.weight_history if entry else "",
        text=str(args.text), lowercase=args.lowercase, sentences=len(sentences), prefix_token=args.prefix_token,
        tokens=next(iter(results.values()))["tokens"], device=args.device, threads=torch.get_num_threads(),
        time_s=time.perf_counter() - start, results=results, ptq=ptq,
        calibration=dict(text=str(args.calib_text), windows=args.calib_nsamples, length=args.calib_seqlen),
    )
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "dropin_study.json").write_text(json.dumps(study, indent=1) + "\n", encoding="utf-8")
    plot(results, args.output_dir, args.pretrained_lm)
    (args.output_dir / "README.md").write_text(markdown(study), encoding="utf-8")
    logging.info(f"Drop-in study written to {args.output_dir}/README.md")


if __name__ == "__main__":
    main()
