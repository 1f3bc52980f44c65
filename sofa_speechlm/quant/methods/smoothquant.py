"""SmoothQuant (Xiao et al., 2023), as mit-han-lab/smoothquant@c61476d does it:

- per input channel j of the linears sharing one norm's output (q/k/v together; fc1, or gate/up
  for Qwen2): s_j = max|X_j|^alpha / max|W_:,j|^(1-alpha), clamped >= 1e-5, where max|X_j| is
  the calibration maximum of the input (q_proj's, shared by k/v) and max|W_:,j| is taken over
  all those linears together (smooth.py:29-39); alpha = 0.5.
- folded into the preceding LayerNorm/RMSNorm (weight and bias / s) and the weight columns (* s)
  (smooth.py:41-45). out_proj/fc2 (o_proj/down_proj) are not smoothed, but quantized.
- OPT post-LN (OPT-350m, do_layer_norm_before=False): the norm does not produce the linears'
  input, folding there is wrong, so s becomes an explicit input pre-scale of each linear
  (x / s, W diag(s)), as torchao's SmoothQuant does.
- quantizers (ours, not the reference's per-tensor demo): symmetric per-output-channel weights,
  symmetric dynamic per-token activations, q/k/v per token and head (see quant/attention.py).
- optional weight clipping (``clip``: fraction p, Table 9 "clip 1%/5%"): after smoothing, each
  weight group's range is clamped to the (1-p)-quantile of |w| (quant/quantizer.PercentileClipper).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from ..architectures import architecture, decoder_layers, is_post_ln, layer_module
from ..calibration import CalibrationError, input_statistics, layer_key
from ..config import QuantConfig, QuantConfigError, register_method
from ..modules import QuantLinear
from ..quantizer import PercentileClipper
from ..transforms import SCALE_FLOOR, fold_norm_scale, prescale_linears


@dataclass
class SmoothQuantConfig(QuantConfig):
    alpha: float = 0.5            # migration strength (paper default for OPT)
    clip: Optional[float] = None  # weight clipping fraction p (0.01, 0.05) or None

    needs_calibration = True

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= self.alpha <= 1.0:
            raise QuantConfigError(f"smoothquant: alpha must lie in [0, 1], got {self.alpha}")
        if self.clip is not None and not 0.0 < self.clip < 1.0:
            raise QuantConfigError(f"smoothquant: clip must be a fraction in (0, 1) or null, got {self.clip}")


def smoothing_scale(act_absmax: torch.Tensor, weights, alpha: float) -> torch.Tensor:
    """s_j = max|X_j|^alpha / max_over_linears max|W_:,j|^(1-alpha), clamped >= 1e-5."""
    weight_absmax = torch.stack([w.detach().abs().amax(0).float() for w in weights]).amax(0)
    scale = act_absmax.float().clamp(min=SCALE_FLOOR).pow(alpha) / weight_absmax.clamp(min=SCALE_FLOOR).pow(1 - alpha)
    return scale.clamp(min=SCALE_FLOOR)


@torch.no_grad()
def smooth(model, config, calibration, method: str = "smoothquant") -> None:
    """Compute and fold the smoothing factors of every (norm -> linears) pair of the model."""
    arch = architecture(model, method)
    post_ln = is_post_ln(model)
    stats = input_statistics(model, calibration, method)
    for index, layer in enumerate(decoder_layers(model, method)):
        for norm_name, linear_names in arch.smoothing:
            linears = [layer_module(layer, name, method, index) for name in linear_names]
            key = layer_key(index, linear_names[0])
            if key not in stats:
                raise CalibrationError(f"{method}: no calibration input reached {key}")
            scale = smoothing_scale(stats[key].absmax, [l.weight for l in linears], config.alpha)
            if post_ln:
                prescale_linears(linears, scale)
            else:
                fold_norm_scale(layer_module(layer, norm_name, method, index), linears, scale)


def install_clipping(model, fraction: float) -> None:
    """Fixed percentile clipping on every quantized weight (thresholds from the current weights)."""
    for module in model.modules():
        if isinstance(module, QuantLinear) and module.weight_quantizer.bits < 16:
            clipper = PercentileClipper(fraction)
            clipper.set_weight(module.weight_quantizer.groups(module.weight.detach()))
            module.weight_quantizer.clipper = clipper


@register_method("smoothquant", SmoothQuantConfig, "SmoothQuant: activation outliers migrated into the weights (alpha 0.5)")
def quantize_smoothquant(model, config, calibration):
    smooth(model, config, calibration)
    if config.clip:
        install_clipping(model, config.clip)
    return model
