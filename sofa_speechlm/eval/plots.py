"""PNG plots of the stage-6 report (matplotlib, Agg): outlier norms per layer and modality, last-layer
attention maps per task (SOFA beside vanilla, one colour scale), average drops per variant."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from sofa_speechlm.text.unit_chars import UNIT_CHAR_BASE, is_unit_char  # noqa: E402

MODALITIES = ("text", "speech", "speech+text")
MAX_TICK_LABELS = 40


def plot_outliers(entries: list, path: Path) -> Path:
    """entries: (label, outliers.json dict). Rows: max inf norm, mean kurtosis; columns: modalities."""
    fig, axes = plt.subplots(2, len(MODALITIES), figsize=(4.2 * len(MODALITIES), 6.5), squeeze=False)
    for col, modality in enumerate(MODALITIES):
        for row, (stat, ylabel) in enumerate((("max_inf_norm", "max ‖x‖∞"), ("mean_kurtosis", "mean kurtosis"))):
            ax = axes[row][col]
            for label, outliers in entries:
                values = (outliers.get("per_layer", {}).get(modality) or {}).get(stat)
                if not values:
                    continue
                layers = [i for i, v in enumerate(values) if v is not None]
                style = "-o" if "sofa" in label.lower() else "--s"
                ax.plot(layers, [values[i] for i in layers], style, label=label, markersize=4)
            ax.set_xlabel("decoder layer")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel(ylabel)
            if row == 0:
                ax.set_title(modality)
            ax.grid(alpha=0.3)
    handles, labels = axes[0][0].get_legend_handles_labels()
    for ax_row in axes:
        for ax in ax_row:
            if ax.get_legend_handles_labels()[0]:
                handles, labels = ax.get_legend_handles_labels()
                break
    fig.legend(handles, labels, loc="lower center", ncol=min(4, max(1, len(labels))), fontsize=8)
    fig.suptitle("Activation outliers per layer (hooked outputs; per-module mean over sequences)")
    fig.tight_layout(rect=(0, 0.06, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def token_label(piece: str) -> str:
    """Readable tick label: unit pieces as u<id>... (the CJK glyphs are not in the default font)."""
    body = piece.lstrip("\u2581")
    if body and all(is_unit_char(c) for c in body):
        return "u" + ".".join(str(ord(c) - UNIT_CHAR_BASE) for c in body)
    return piece.replace("\u2581", "_")


def plot_attention(task: str, maps: list, path: Path) -> Path:
    """maps: (label, [T, T] weights, token pieces, normalizer), drawn side by side on one colour scale."""
    vmax = max(float(w.max()) for _, w, _, _ in maps)
    fig, axes = plt.subplots(1, len(maps), figsize=(5.2 * len(maps), 5.0), squeeze=False)
    image = None
    for column, (ax, (label, weights, pieces, normalizer)) in enumerate(zip(axes[0], maps)):
        future = np.triu(np.ones_like(weights, dtype=bool), k=1)  # causal: keys after the query (white)
        image = ax.imshow(np.ma.masked_where(future, weights), cmap="coolwarm", vmin=0.0, vmax=vmax, interpolation="nearest")
        sums = weights.sum(axis=1)
        note = f"rows sum {sums.min():.2f}-{sums.max():.2f}" + (" (< 1: Softmax1)" if normalizer != "softmax" else "")
        ax.set_title(f"{label}\n{note}", fontsize=9)
        ax.set_xlabel("key token")
        if column == 0:
            ax.set_ylabel("query token")
        length = len(pieces)
        step = max(1, int(np.ceil(length / MAX_TICK_LABELS)))
        ticks = list(range(0, length, step))
        labels = [token_label(pieces[i]) for i in ticks]
        ax.set_xticks(ticks, labels, rotation=90, fontsize=6)
        ax.set_yticks(ticks, labels, fontsize=6)
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="attention probability (head mean)")
    fig.suptitle(f"Last-layer attention, {task}")
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def plot_drops(rows: list, path: Path) -> Path:
    """Grouped bars: one group per variant (bits + method), one bar per model (attention, fine-tuning)."""
    groups = sorted({r["group"] for r in rows}, key=lambda g: [r["group"] for r in rows].index(g))
    models = sorted({r["model"] for r in rows}, key=lambda m: [r["model"] for r in rows].index(m))
    width = 0.8 / max(1, len(models))
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(groups) * max(1, len(models)) ** 0.5 + 2), 4.5))
    for index, model in enumerate(models):
        xs, ys = [], []
        for g, group in enumerate(groups):
            match = [r for r in rows if r["group"] == group and r["model"] == model]
            if match:
                xs.append(g + (index - (len(models) - 1) / 2) * width)
                ys.append(100 * match[0]["drop"])
        bars = ax.bar(xs, ys, width, label=model)
        ax.bar_label(bars, fmt="%.1f%%", fontsize=7)
    ax.set_xticks(range(len(groups)), groups, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("average performance drop (%)")
    ax.axhline(0, color="black", linewidth=0.6)
    ax.legend(fontsize=8)
    ax.set_title("Average performance drop against the baseline (lower is better)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
