"""StableQuant (Hong et al., ICASSP 2025): Algorithm 1 (layer selection) and Algorithm 2 (scale
calibration), and the baselines, as one entry point ``calibrate(method, ...)`` -> QuantPlan.

Algorithm 1: each layer's input activation alone is quantized with max calibration (S_c(p=0,
m=0)); the layers whose dev degradation Delta exceeds gamma form S. Algorithm 2 over the grid
P: layers in S get S_c(p, m=1) (percentile clipping, then MSE), the others S_c(0, 1) (MSE
only); the whole model (weights and activations) is quantized for each p and p_opt minimises
the dev metric (ties: the smallest p). The dev metric here is the unit error rate (evaluation.py),
or, with a stage-4 LM, its ASR WER on the dev units against full precision (asr.py)."""
from __future__ import annotations

import logging

import numpy as np
from torch import nn
from tqdm import tqdm

from .apply import QuantPlan, simulated
from .calibrators import CALIBRATORS, METHODS, Histogram, search_clip

DEFAULT_GAMMA = 0.25  # the paper's threshold (0.25% WER), here in UER percentage points
DEFAULT_P_MAX, DEFAULT_P_STEP = 0.5, 0.01  # the paper's grid: [0, 0.5] by 0.01 (percent)


def percentile_grid(p_max: float = DEFAULT_P_MAX, p_step: float = DEFAULT_P_STEP) -> list[float]:
    """[0, p_step, ..., p_max]; p in percent of the values cut off."""
    if not 0.0 <= p_max < 100.0:
        raise ValueError(f"--p_max {p_max}: expected 0 <= p_max < 100 (percent of the values cut off; the paper: 0.5)")
    if not p_step > 0.0 or (p_max > 0 and p_step > p_max):
        raise ValueError(f"--p_step {p_step}: expected 0 < p_step <= p_max ({p_max}) (the paper: 0.01)")
    return [round(step * p_step, 10) for step in range(int(np.floor(p_max / p_step + 1e-9)) + 1)]


def check_gamma(gamma: float) -> float:
    if not 0.0 <= gamma < 100.0:
        raise ValueError(f"--gamma {gamma}: expected 0 <= gamma < 100 (unit error rate points; the paper: 0.25)")
    return gamma


def select_layers(layers: dict[str, nn.Module], hists: dict[str, Histogram], act_bits: int, evaluate, gamma: float) -> dict[str, float]:
    """Algorithm 1: name -> Delta (dev UER with only that layer's input max-quantized)."""
    check_gamma(gamma)
    deltas = {}
    for name in tqdm(layers, desc=f"layer selection A{act_bits}", mininterval=10):
        with simulated(layers, QuantPlan(act_bits, {name: search_clip(hists[name], 0.0, act_bits, mse=False)})):
            deltas[name] = evaluate()
    selected = [name for name, delta in deltas.items() if delta > gamma]
    logging.info("A%d: %d of %d layers degrade the dev %s by more than gamma=%.3g: %s", act_bits, len(selected), len(layers),
                 getattr(evaluate, "name", "UER"), gamma, ", ".join(selected) or "none")
    return deltas


def adaptive_plan(hists, selected, p, weight_bits, act_bits) -> QuantPlan:
    clips = {name: search_clip(hist, p if name in selected else 0.0, act_bits, mse=True) for name, hist in hists.items()}
    return QuantPlan(act_bits, clips, weight_bits, {name: (p if name in selected else 0.0) for name in hists})


def stablequant(layers, hists, weight_bits, act_bits, evaluate, gamma=DEFAULT_GAMMA, grid=None) -> tuple[QuantPlan, dict]:
    """Algorithms 1 and 2; returns the plan and the details the report shows."""
    grid = percentile_grid() if grid is None else grid
    deltas = select_layers(layers, hists, act_bits, evaluate, gamma)
    selected = [name for name, delta in deltas.items() if delta > gamma]
    curve, scored = {}, {}  # neighbouring p often give the same clips (the MSE optimum lies below both cut-offs)
    for p in tqdm(grid if selected else [0.0], desc=f"percentile search W{weight_bits}A{act_bits}", mininterval=10):
        plan = adaptive_plan(hists, selected, p, weight_bits, act_bits)
        key = tuple(plan.clips[name] for name in selected)
        if key not in scored:
            with simulated(layers, plan):
                scored[key] = evaluate()
        curve[p] = scored[key]
    p_opt = min(curve, key=lambda p: (curve[p], p))
    logging.info("W%dA%d: p_opt = %g (dev %s %.3f) for %s", weight_bits, act_bits, p_opt, getattr(evaluate, "name", "UER"),
                 curve[p_opt], ", ".join(selected) or "no layer")
    metric = getattr(evaluate, "name", "uer")  # "asr_wer" (asr.py): deltas and curve in WER points against full precision
    details = {"gamma": gamma, "metric": metric, f"selection_{metric}": deltas, "selected": selected, "p_opt": p_opt, "p_curve": curve}
    return adaptive_plan(hists, selected, p_opt, weight_bits, act_bits), details


def calibrate(method: str, layers, hists, weight_bits: int, act_bits: int, evaluate=None, **stablequant_options) -> tuple[QuantPlan, dict]:
    """The plan of ``method`` (a CALIBRATORS name or 'stablequant', which needs ``evaluate``)."""
    if method == "stablequant":
        if evaluate is None:
            raise ValueError("stablequant needs a dev set (the unit error rate of Algorithms 1 and 2)")
        return stablequant(layers, hists, weight_bits, act_bits, evaluate, **stablequant_options)
    if method not in CALIBRATORS:
        raise ValueError(f"--methods {method!r}: expected one of {', '.join(METHODS)}")
    clips = {name: CALIBRATORS[method](hists[name], act_bits) for name in layers}
    return QuantPlan(act_bits, clips, weight_bits), {}
