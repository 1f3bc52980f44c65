"""QuantLinear: an nn.Linear with fake-quantized input and weight, the unit every method edits.

forward(x) = F.linear(act_quantizer((x - input_shift) / input_scale), weight_quantizer(weight), bias)

- ``input_scale`` / ``input_shift`` (optional buffers, per input channel): an explicit smoothing
  pre-transform for linears whose input cannot absorb it (OPT post-LN); the weight and bias are
  stored already compensated, so with quantizers disabled the output equals the original's.
- ``freeze()`` replaces the weight by its quantized-dequantized value and keeps the integer grid
  (codes, scale, zero) for saving; afterwards the weight quantizer is no longer applied (it
  would be idempotent anyway), which makes a saved and reloaded model bit-identical.
- ``kernel``: after ``real.to_real``, a torchao-quantized nn.Linear that replaces the simulated
  matmul (the pre-scale stays a float division in front of it).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .quantizer import ActQuantizer, WeightQuantizer, dequantize_codes


class QuantLinear(nn.Module):
    def __init__(self, in_features: int, out_features: int, bias: bool, w_bits: int, a_bits: int,
                 w_symmetric: bool = True, a_symmetric: bool = True, group_size: Optional[int] = None,
                 device=None, dtype=None):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(torch.empty(out_features, in_features, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(out_features, device=device, dtype=dtype)) if bias else None
        self.weight_quantizer = WeightQuantizer(w_bits, w_symmetric, group_size)
        self.act_quantizer = ActQuantizer(a_bits, a_symmetric)
        self.register_buffer("input_scale", None)
        self.register_buffer("input_shift", None)
        self.frozen = False
        self.grid: Optional[tuple] = None  # (codes int16 [out, in], scale [out*groups, 1], zero or None) once frozen
        self.kernel: Optional[nn.Module] = None

    @classmethod
    def from_linear(cls, linear: nn.Linear, **quant) -> "QuantLinear":
        """A QuantLinear sharing nothing with ``linear`` but holding copies of its parameters."""
        module = cls(linear.in_features, linear.out_features, linear.bias is not None,
                     device=linear.weight.device, dtype=linear.weight.dtype, **quant)
        with torch.no_grad():
            module.weight.copy_(linear.weight)
            if linear.bias is not None:
                module.bias.copy_(linear.bias)
        return module

    @torch.no_grad()
    def set_input_smoothing(self, scale: torch.Tensor, shift: Optional[torch.Tensor] = None) -> None:
        """Make the linear see (x - shift) / scale, exactly compensated: b -> b + W shift,
        W -> W diag(scale). Composes with an earlier pre-transform (applied first)."""
        scale = scale.detach().to(self.weight).clone()
        if shift is not None:
            shift = shift.detach().to(self.weight).clone()
            if self.bias is None:
                raise ValueError("an input shift needs a linear with a bias to absorb it")
            self.bias.add_(self.weight @ shift)
            previous = self.input_scale if self.input_scale is not None else 1.0
            self.input_shift = shift * previous + (self.input_shift if self.input_shift is not None else 0.0)
        self.weight.mul_(scale)
        self.input_scale = scale if self.input_scale is None else self.input_scale * scale

    def set_input_scale(self, scale: torch.Tensor) -> None:
        """x -> x / s, W -> W diag(s) (SmoothQuant on a post-LN input)."""
        self.set_input_smoothing(scale)

    def set_quantizers(self, enabled: bool) -> None:
        self.weight_quantizer.enabled = enabled
        self.act_quantizer.enabled = enabled

    def quantized_weight(self) -> torch.Tensor:
        return self.weight if self.frozen else self.weight_quantizer(self.weight)

    @torch.no_grad()
    def freeze(self) -> None:
        """Put the weight on its quantization grid for good (idempotent)."""
        if self.frozen or not self.weight_quantizer.active:
            self.frozen = True
            return
        self.set_grid(*self.weight_quantizer.params(self.weight))
        self.weight_quantizer.clipper = None  # folded into the grid; a clipper's parameters are not saved

    @torch.no_grad()
    def set_grid(self, codes: torch.Tensor, scale: torch.Tensor, zero: Optional[torch.Tensor]) -> None:
        """Weight <- dequantized ``codes`` (the same arithmetic as the fake quantizer, so the
        result is bit-identical); keeps the grid for saving."""
        grouped = codes.to(scale.dtype).reshape(scale.shape[0], -1)
        zero = zero.to(scale.dtype) if zero is not None else None
        self.weight.copy_(dequantize_codes(grouped, scale, zero).reshape(self.weight.shape))
        self.grid = (codes.to(torch.int16), scale.detach(), zero.detach() if zero is not None else None)
        self.frozen = True

    def pre_transform(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_shift is not None:
            x = x - self.input_shift.to(x.dtype)
        if self.input_scale is not None:
            x = x / self.input_scale.to(x.dtype)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kernel is not None:
            return self.kernel(self.pre_transform(x))
        return F.linear(self.act_quantizer(self.pre_transform(x)), self.quantized_weight(), self.bias)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, "
                f"pre_scale={self.input_scale is not None}, frozen={self.frozen}, real={self.kernel is not None}")


def quant_linears(model: nn.Module):
    """(name, QuantLinear) pairs of ``model``."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, QuantLinear)]


def set_quantizers(model: nn.Module, enabled: bool) -> None:
    """Switch every fake quantizer of ``model`` (linears and attention q/k/v) on or off."""
    from .attention import attention_quantizers

    for _, module in quant_linears(model):
        module.set_quantizers(enabled)
    for quantizer in attention_quantizers(model):
        quantizer.enabled = enabled
