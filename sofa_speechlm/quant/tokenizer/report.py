"""The report of a tokenizer PTQ run: report.json, report.md and a plot of per-layer ranges.

Rows: one per (scope, setting, method): dev (and test) unit error rate against full precision,
the layers StableQuant selected and p per layer, size and speed against full precision.
Size is the storage of the parameters: quantized layers' weights at b bits plus one fp32 scale
per output channel and one per activation; every other parameter (norms, positional conv,
biases) in fp32. Speed is the measured feature-extraction time of the dev audio."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from torch import nn

from .calibrators import Histogram, percentile_clip
from .layers import is_cnn

REPORT_JSON, REPORT_MD, RANGES_PNG = "report.json", "report.md", "activation_ranges.png"


def parameter_bytes(model: nn.Module, layers: dict[str, nn.Module] | None = None, weight_bits: int | None = None) -> int:
    """Bytes of the model's parameters; with ``layers`` and ``weight_bits``, those layers'
    weights at ``weight_bits`` with a fp32 scale per output channel and per input activation."""
    quantized = {id(module.weight): module.weight for module in (layers or {}).values()} if weight_bits else {}
    total = 0
    for parameter in model.parameters():
        if id(parameter) in quantized:
            total += (parameter.numel() * weight_bits + 7) // 8 + 4 * parameter.shape[0] + 4
        else:
            total += parameter.numel() * parameter.element_size()
    return total


def activation_summary(hists: dict[str, Histogram]) -> dict[str, dict]:
    """name -> max |x| and its 99.99th percentile (from the histogram)."""
    return {name: {"max": hist.amax, "p99.99": percentile_clip(hist, 0.01), "cnn": is_cnn(name)} for name, hist in hists.items()}


def plot_ranges(path: Path, hists: dict[str, Histogram], weight_ranges: dict[str, np.ndarray]) -> Path:
    """Per-layer input activation ranges (max, 99.99th percentile) and per-channel weight ranges,
    CNN feature extractor vs transformer, log scale (the paper's Fig. 1 contrast)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(hists)
    colours = ["tab:red" if is_cnn(name) else "tab:blue" for name in names]
    x = np.arange(len(names))
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(max(8, 0.35 * len(names) + 3), 8), sharex=True)
    top.bar(x, [max(hists[n].amax, 1e-6) for n in names], color=colours, alpha=0.45, label="max |x|")
    top.scatter(x, [max(percentile_clip(hists[n], 0.01), 1e-6) for n in names], color=colours, marker="_", s=160, label="99.99th percentile |x|")
    top.set_yscale("log")
    top.set_ylabel("input activation |x|")
    top.set_title("Per-layer activation and weight ranges (red: CNN feature extractor, blue: transformer)")
    top.legend(loc="upper right")
    channel = [weight_ranges[n] for n in names]
    bottom.bar(x, [r.max() for r in channel], color=colours, alpha=0.45, label="max over output channels of max |w|")
    bottom.scatter(x, [np.median(r) for r in channel], color=colours, marker="_", s=160, label="median over output channels")
    bottom.set_yscale("log")
    bottom.set_ylabel("weight |w| per output channel")
    bottom.legend(loc="upper right")
    short = [n.replace("feature_extractor.conv_layers.", "conv").replace(".conv", "").replace("encoder.layers.", "L")
              .replace("attention.", "").replace("feed_forward.", "").replace("feature_projection.projection", "proj") for n in names]
    bottom.set_xticks(x, short, rotation=90, fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def _cell(value, digits=2):
    return "-" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def write_report(output_dir: Path, report: dict) -> tuple[Path, Path]:
    """report.json as it is, and report.md with the table and StableQuant's choices."""
    output_dir = Path(output_dir)
    (output_dir / REPORT_JSON).write_text(json.dumps(report, indent=2) + "\n")
    fp = report["full_precision"]
    lines = [
        "# HuBERT tokenizer PTQ report", "",
        f"- checkpoint: `{report['hubert_ckpt']}` (layer {report['layer']}), k-means: `{report['kmeans_file']}` (K={report['n_clusters']})",
        f"- calibration: {report['calibration']['utterances']} utterances, {report['calibration']['seconds']:.1f} s; "
        f"dev: {report['dev']['utterances']} utterances, {report['dev']['frames']} frames"
        + (f"; test: {report['test']['utterances']} utterances, {report['test']['frames']} frames" if report.get("test") else ""),
        f"- unit error rate (UER): % of 50 Hz frames whose unit differs from the full-precision tokenizer's",
        f"- full precision: {fp['size_mb']:.3f} MB parameters, {fp['ms_per_audio_s']:.2f} ms per second of audio",
    ]
    asr = report.get("asr")
    metric = "ASR WER points above full precision" if asr else "UER"
    if asr:
        lines.append(f"- dev metric of Algorithms 1 and 2: greedy ASR WER of `{asr['exp_dir']}` on {asr['utterances']} dev utterances "
                     f"(full-precision units: {asr['full_precision_wer']:.2f}%), in WER points above it")
    lines += [
        f"- StableQuant: gamma {report['gamma']} {'ASR WER' if asr else 'UER'} points, p grid 0..{report['p_max']} step {report['p_step']} (% of values cut off)",
        "", "| scope | setting | method | dev UER % | dev dedup UER % |" + (" dev ASR WER % |" if asr else "")
        + " test UER % | execution | size MB | size ratio | speed-up | selected layers | p_opt |",
        "|---|---|---|---|---|" + ("---|" if asr else "") + "---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        lines.append(
            f"| {row['scope']} | {row['setting']} | {row['method']} | {_cell(row['dev_uer'])} | {_cell(row.get('dev_dedup_uer'))} | "
            + (f"{_cell(row.get('dev_asr_wer'))} | " if asr else "") + f"{_cell(row.get('test_uer'))} | "
            f"{row['execution']} | {row['size_mb']:.3f} | {row['size_ratio']:.3f} | {row['speedup']:.2f}x | "
            f"{', '.join(row['selected']) if row['method'] == 'stablequant' else '-'} | {_cell(row.get('p_opt'))} |")
    for row in report["rows"]:
        if row["method"] == "stablequant":
            deltas = row.get("selection_asr_wer", {}) if asr else row["selection_uer"]
            lines += ["", f"## StableQuant {row['scope']} {row['setting']}", "",
                      f"Layer selection (Algorithm 1, dev {metric} with only that layer's input max-quantized):", "",
                      f"| layer | {'WER points' if asr else 'UER %'} | selected | p |", "|---|---|---|---|"]
            lines += [f"| {name} | {delta:.2f} | {'yes' if name in row['selected'] else ''} | {row['percentiles'].get(name, 0.0):g} |"
                      for name, delta in deltas.items()]
            lines += ["", f"Percentile search (Algorithm 2, dev {metric} per p): "
                      + ", ".join(f"{p}: {value:.2f}" for p, value in row["p_curve"].items())]
    lines += ["", f"![activation ranges]({RANGES_PNG})", ""]
    (output_dir / REPORT_MD).write_text("\n".join(lines))
    return output_dir / REPORT_JSON, output_dir / REPORT_MD
