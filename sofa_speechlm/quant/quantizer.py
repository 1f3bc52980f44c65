"""Uniform quantizer primitives shared by every PTQ method.

Conventions (one place, so that all methods quantize alike):
- b-bit symmetric: q in [-(2^(b-1)-1), 2^(b-1)-1] (the narrow range, as SmoothQuant's absmax/127
  and torchao's int8 kernels), scale = absmax / qmax, no zero point.
- b-bit asymmetric: q in [0, 2^b - 1], scale = (max - min) / (2^b - 1), integer zero point
  round(-min / scale) (OmniQuant quantize/quantizer.py conventions), dequant = (q - z) * scale.
- Scales are clamped to >= 1e-5 (and <= 1e4), so an all-zero row or token gives zeros, not NaN.
- Rounding uses a straight-through estimator: forward round, backward identity, so learnable
  parameters (LWC clipping, LET scales) receive gradients through fake quantization.
- Weights: per output channel (``group_size=None``) or per group of ``group_size`` consecutive
  input channels. Activations: dynamic per token (one range per row of the last dimension).
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
from torch import nn

SCALE_MIN, SCALE_MAX = 1e-5, 1e4


def round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round to nearest in the forward pass, identity gradient in the backward pass."""
    return (x.round() - x).detach() + x


def qrange(bits: int, symmetric: bool) -> tuple[int, int]:
    """(qmin, qmax) of the integer grid."""
    if symmetric:
        return -(2 ** (bits - 1) - 1), 2 ** (bits - 1) - 1
    return 0, 2**bits - 1


def scale_zero(xmin: torch.Tensor, xmax: torch.Tensor, bits: int, symmetric: bool):
    """Scale and (asymmetric) integer zero point from per-row ranges; zero is None when symmetric.

    The zero point is rounded with the STE so that gradients reach ``xmin`` through it."""
    qmin, qmax = qrange(bits, symmetric)
    if symmetric:
        absmax = torch.maximum(xmax.abs(), xmin.abs())
        return (absmax / qmax).clamp(SCALE_MIN, SCALE_MAX), None
    scale = ((xmax - xmin) / (qmax - qmin)).clamp(SCALE_MIN, SCALE_MAX)
    zero = round_ste(-xmin / scale).clamp(qmin, qmax)
    return scale, zero


def quantize_codes(x, scale, zero, bits: int, symmetric: bool) -> torch.Tensor:
    """Integer codes (as float) of ``x`` on the grid given by ``scale``/``zero`` (broadcastable)."""
    qmin, qmax = qrange(bits, symmetric)
    q = round_ste(x / scale)
    if zero is not None:
        q = q + zero
    return q.clamp(qmin, qmax)


def dequantize_codes(q, scale, zero) -> torch.Tensor:
    return (q - zero) * scale if zero is not None else q * scale


def fake_quantize_rows(x, xmin, xmax, bits: int, symmetric: bool) -> torch.Tensor:
    """Quantize-dequantize ``x`` with ranges given per row ([..., 1] tensors); out of place."""
    scale, zero = scale_zero(xmin, xmax, bits, symmetric)
    return dequantize_codes(quantize_codes(x, scale, zero, bits, symmetric), scale, zero)


def row_range(x: torch.Tensor):
    """(min, max) of every row over the last dimension, kept as [..., 1]."""
    return x.amin(dim=-1, keepdim=True), x.amax(dim=-1, keepdim=True)


class ActQuantizer(nn.Module):
    """Dynamic per-token activation fake quantizer: one range per row of the last dimension.

    ``bits >= 16`` or ``enabled = False`` makes it the identity. Per-token ranges depend only on
    the token itself, so quantizing a token again (as a KV cache is, every decoding step) gives
    the same values as in a full forward."""

    def __init__(self, bits: int = 16, symmetric: bool = True):
        super().__init__()
        self.bits, self.symmetric, self.enabled = int(bits), bool(symmetric), True

    @property
    def active(self) -> bool:
        return self.enabled and self.bits < 16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return x
        dtype = x.dtype
        x32 = x.float()
        xmin, xmax = row_range(x32)
        return fake_quantize_rows(x32, xmin, xmax, self.bits, self.symmetric).to(dtype)

    def extra_repr(self) -> str:
        return f"bits={self.bits}, symmetric={self.symmetric}, per_token=True, enabled={self.enabled}"


# A clipper maps per-group ranges (xmin, xmax) -> clipped (xmin, xmax); it may hold parameters
# (OmniQuant's LWC) or be a fixed rule (percentile clipping). Shapes: [rows * groups, 1].
Clipper = Callable[[torch.Tensor, torch.Tensor], tuple]


class WeightQuantizer(nn.Module):
    """Weight fake quantizer per output channel or per group of input channels.

    ``clipper`` (an ``nn.Module`` or None) shrinks the per-group range before the scale is
    computed: ``xmin, xmax = clipper(xmin, xmax)``; a learnable clipper (LWC) is trained through
    the STE. ``params(w)`` gives the integer grid (codes, scale, zero) that ``io`` stores."""

    def __init__(self, bits: int = 16, symmetric: bool = True, group_size: Optional[int] = None):
        super().__init__()
        self.bits, self.symmetric, self.enabled = int(bits), bool(symmetric), True
        self.group_size = int(group_size) if group_size else None
        self.clipper: Optional[nn.Module] = None

    @property
    def active(self) -> bool:
        return self.enabled and self.bits < 16

    def group_width(self, in_features: int) -> int:
        """Inputs per group: ``group_size``, or all of them (per channel, or a narrower layer)."""
        return min(self.group_size or in_features, in_features)

    def groups(self, weight: torch.Tensor) -> torch.Tensor:
        """[out, in] -> [out * in / g, g] (g = in for per-channel)."""
        g = self.group_width(weight.shape[1])
        if weight.shape[1] % g:
            raise ValueError(f"group size {g} does not divide the input size {weight.shape[1]} of a {tuple(weight.shape)} weight")
        return weight.reshape(-1, g)

    def ranges(self, grouped: torch.Tensor):
        xmin, xmax = row_range(grouped)
        if self.clipper is not None:
            xmin, xmax = self.clipper(xmin, xmax)
        return xmin, xmax

    def params(self, weight: torch.Tensor):
        """(codes [out, in] float, scale [out*groups, 1], zero or None) of ``weight``."""
        grouped = self.groups(weight)
        scale, zero = scale_zero(*self.ranges(grouped), self.bits, self.symmetric)
        codes = quantize_codes(grouped, scale, zero, self.bits, self.symmetric)
        return codes.reshape(weight.shape), scale, zero

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return weight
        codes, scale, zero = self.params(weight)
        grouped = codes.reshape(scale.shape[0], -1)
        return dequantize_codes(grouped, scale, zero).reshape(weight.shape)

    def extra_repr(self) -> str:
        return (f"bits={self.bits}, symmetric={self.symmetric}, group_size={self.group_size}, "
                f"clipper={type(self.clipper).__name__ if self.clipper is not None else None}, enabled={self.enabled}")


def row_quantile(x: torch.Tensor, q: float, rows_per_chunk: int = 4096) -> torch.Tensor:
    """torch.quantile(x, q, dim=-1, keepdim=True) with linear interpolation, computed by sorting
    chunks of rows (torch.quantile refuses inputs of more than 16M elements, e.g. OPT-1.3b's fc1)."""
    position = (x.shape[-1] - 1) * q
    low, frac = int(position), position - int(position)
    high = min(low + 1, x.shape[-1] - 1)
    out = []
    for chunk in x.split(rows_per_chunk):
        ordered = chunk.sort(dim=-1).values
        out.append(ordered[:, low:low + 1] + frac * (ordered[:, high:high + 1] - ordered[:, low:low + 1]))
    return torch.cat(out)


class PercentileClipper(nn.Module):
    """Fixed clipping for SmoothQuant + clipping (paper Table 9, whose definition is not given).

    Definition used here: per quantization group (a weight row, or a row-group), the clipping
    threshold is ``c = quantile(|w|, 1 - p)`` over the group's entries; the range becomes
    [-c, c] for symmetric and [max(min, -c), min(max, c)] for asymmetric quantization. Values
    beyond c saturate at the grid's ends. p = 0.01 ("clip 1%") or 0.05 ("clip 5%").
    The thresholds are computed from the weight at ``set_weight`` time (after smoothing)."""

    def __init__(self, fraction: float):
        super().__init__()
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"clipping fraction must lie in (0, 1), got {fraction!r}")
        self.fraction = float(fraction)
        self.register_buffer("threshold", torch.empty(0), persistent=False)

    def set_weight(self, grouped: torch.Tensor) -> None:
        self.threshold = row_quantile(grouped.detach().abs().float(), 1.0 - self.fraction)

    def forward(self, xmin, xmax):
        c = self.threshold.to(xmin.dtype)
        return torch.maximum(xmin, -c), torch.minimum(xmax, c)
