"""OmniQuant's learnable weight clipping (LWC), a clipper for ``quantizer.WeightQuantizer``.

Per quantization group (an output row, or a row-group of ``group_size`` inputs) two parameters
gamma, beta shrink the range: ``xmax <- sigmoid(gamma) * xmax``, ``xmin <- sigmoid(beta) * xmin``.
They start at 4.0 (sigmoid = 0.982, almost no clipping) and are trained through the quantizer's
straight-through rounding.
"""
import torch
from torch import nn

LWC_INIT = 4.0


class LearnableClipping(nn.Module):
    def __init__(self, groups: int, init: float = LWC_INIT, device=None):
        super().__init__()
        self.upper = nn.Parameter(torch.full((groups, 1), float(init), device=device))
        self.lower = nn.Parameter(torch.full((groups, 1), float(init), device=device))

    def forward(self, xmin: torch.Tensor, xmax: torch.Tensor):
        return torch.sigmoid(self.lower) * xmin, torch.sigmoid(self.upper) * xmax


def install_clipping(linear, device=None) -> LearnableClipping:
    """Give a QuantLinear's weight quantizer a fresh LWC clipper sized to its groups; returns it."""
    quantizer = linear.weight_quantizer
    clipper = LearnableClipping(quantizer.groups(linear.weight.detach()).shape[0], device=device or linear.weight.device)
    quantizer.clipper = clipper
    return clipper
