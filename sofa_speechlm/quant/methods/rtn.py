"""RTN: round-to-nearest of the weights on their min/max (or absmax) grid, dynamic per-token
activations; no calibration, no transform. The baseline every other method is measured against."""
from dataclasses import dataclass

from ..config import QuantConfig, register_method


@dataclass
class RTNConfig(QuantConfig):
    """Symmetric weights (per channel; groups of 128 at W4A16) and per-token symmetric activations."""


@register_method("rtn", RTNConfig, "round-to-nearest weights, dynamic per-token activations")
def quantize_rtn(model, config, calibration):
    return model
