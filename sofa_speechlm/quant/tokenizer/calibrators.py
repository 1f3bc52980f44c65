"""Activation clipping values c (scale = c / qmax, symmetric) from a histogram of |x|.

One registry, ``CALIBRATORS``: name -> function(histogram, bits) -> c. The paper's baselines:
- max:        c = max |x|;
- percentile: c = the (100 - p)-th percentile of |x| (p = 0.01, i.e. 99.99, as NVIDIA's
              pytorch-quantization suggests; the paper does not give its value);
- mse:        Algorithm 2 with p = 0, m = 1: the bin centre minimising the histogram-weighted
              squared quantize-dequantize error;
- entropy:    TensorRT's KL calibration: the threshold minimising KL(P || Q) between the clipped
              histogram and its requantization to 2^(b-1) levels.
StableQuant (Algorithm 2 with p > 0 on the layers Algorithm 1 selects) is ``search_clip`` with a
cut-off percentile p; the model-level procedure lives in stablequant.py.

Percentile clipping (Algorithm 2, line 2): the histogram keeps its first k bins, k the smallest
with at least (100 - p)% of the mass; the bins above are dropped (not saturated), so the outliers
do not steer the MSE search. p is in percent of the values, searched in [0, 0.5] by 0.01.
Without MSE (m = 0) c is the upper edge of the last kept bin, so p = 0 gives max |x| exactly.
The MSE error saturates at the grid's ends (Algorithm 2's round(c/s) * s, with the clamp the
paper's formula leaves implicit: without it the smallest scale would always win)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from sofa_speechlm.quant.quantizer import dequantize_codes, qrange, quantize_codes

DEFAULT_PERCENTILE_P = 0.01  # percent of |x| cut off by the percentile baseline (99.99th percentile)


@dataclass
class Histogram:
    """Counts of |x| in ``len(counts)`` equal bins over [0, amax]."""

    counts: np.ndarray
    amax: float

    @property
    def edges(self) -> np.ndarray:
        return np.linspace(0.0, self.amax, len(self.counts) + 1)

    @property
    def centres(self) -> np.ndarray:
        edges = self.edges
        return (edges[:-1] + edges[1:]) / 2

    def kept_bins(self, p: float) -> int:
        """k: the first k bins hold at least (100 - p)% of the values (percentile clipping)."""
        if not 0.0 <= p < 100.0:
            raise ValueError(f"cut-off percentile p={p}: expected 0 <= p < 100 (percent of the values)")
        cumulative = np.cumsum(self.counts)
        total = cumulative[-1]
        if total <= 0:
            return len(self.counts)
        if p == 0:
            return int(np.nonzero(self.counts)[0][-1]) + 1
        return int(np.searchsorted(cumulative, total * (1.0 - p / 100.0), side="left")) + 1


def percentile_clip(hist: Histogram, p: float) -> float:
    """Upper edge of the last bin kept by percentile clipping at p (Algorithm 2, m = 0)."""
    if hist.amax <= 0:
        return 0.0
    return float(hist.edges[hist.kept_bins(p)])


def mse_errors(hist: Histogram, p: float, bits: int) -> tuple[np.ndarray, np.ndarray]:
    """(candidate clips c_i, errors e_i) of Algorithm 2 with m = 1 over the clipped histogram."""
    k = hist.kept_bins(p)
    centres = torch.from_numpy(hist.centres[:k])
    counts = torch.from_numpy(hist.counts[:k].astype(np.float64))
    _, qmax = qrange(bits, symmetric=True)
    scales = (centres / qmax).unsqueeze(1)  # [candidates, 1]
    values = centres.unsqueeze(0)  # [1, bins]
    restored = dequantize_codes(quantize_codes(values, scales, None, bits, True), scales, None)
    errors = ((values - restored) ** 2 * counts).sum(dim=1) / k
    return centres.numpy(), errors.numpy()


def search_clip(hist: Histogram, p: float, bits: int, mse: bool = True) -> float:
    """S_c(p, m): the clip of Algorithm 2 (MSE search when ``mse``, else the clipped maximum)."""
    if hist.amax <= 0:
        return 0.0
    if not mse:
        return percentile_clip(hist, p)
    candidates, errors = mse_errors(hist, p, bits)
    return float(candidates[int(np.argmin(errors))])


def entropy_clip(hist: Histogram, bits: int) -> float:
    """TensorRT's entropy calibration on the |x| histogram: 2^(b-1) quantization levels."""
    if hist.amax <= 0:
        return 0.0
    counts = hist.counts.astype(np.float64)
    levels = qrange(bits, True)[1] + 1
    last = int(np.nonzero(counts)[0][-1]) + 1
    if last <= levels:
        return float(hist.edges[last])
    best, best_kl = last, np.inf
    for i in range(levels, last + 1):
        reference = counts[:i].copy()
        reference[-1] += counts[i:].sum()
        group = np.arange(i) * levels // i  # the quantization level of each bin
        nonzero = counts[:i] > 0
        level_mass = np.bincount(group, weights=counts[:i], minlength=levels)
        level_bins = np.bincount(group, weights=nonzero, minlength=levels)
        expanded = np.where(nonzero, level_mass[group] / np.maximum(level_bins[group], 1), 0.0)
        p = reference / reference.sum()
        q = expanded / expanded.sum()
        mask = p > 0
        kl = float(np.sum(p[mask] * np.log(p[mask] / np.maximum(q[mask], 1e-12))))
        if kl < best_kl:
            best, best_kl = i, kl
    return float(hist.edges[best])


Calibrator = Callable[[Histogram, int], float]
CALIBRATORS: dict[str, Calibrator] = {
    "max": lambda hist, bits: percentile_clip(hist, 0.0),
    "percentile": lambda hist, bits: percentile_clip(hist, DEFAULT_PERCENTILE_P),
    "mse": lambda hist, bits: search_clip(hist, 0.0, bits, mse=True),
    "entropy": entropy_clip,
}
METHODS = (*CALIBRATORS, "stablequant")  # stablequant needs the model and a dev set (stablequant.py)
