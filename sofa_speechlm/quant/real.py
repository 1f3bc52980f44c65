"""Real low-bit execution of frozen QuantLinears through torchao kernels.

- W8A8: ``Int8Linear``: the frozen int8 weight codes and scales as they are, activations
  quantized per token to int8 with the simulated path's rule (absmax/127, [-127, 127]), then
  torchao's int8 x int8 -> int32 kernel (``torchao.kernel.intmm.int_scaled_matmul``:
  torch._int_mm on CPU and CUDA) and the two scales. torchao's own
  ``Int8DynamicActivationInt8WeightConfig`` re-derives scales as absmax/127.5 on [-128, 127],
  a different grid from SmoothQuant's, so real and simulated would disagree by a second
  rounding; calling its kernel with our codes keeps them equal up to float summation order.
- W4A16: int4 weight-only, groups of 128 (``PrototypeInt4WeightOnlyConfig``, CPU tinygemm; on
  CUDA ``Int4WeightOnlyConfig`` with the tile-packed tinygemm layout). torchao re-quantizes the
  frozen weight with its own asymmetric float-zero grid, so real W4A16 is close to, not equal
  to, the simulated path.
- Everything else (W4A4, W6A6, W8A16) has no kernel and stays simulated.
A method's input pre-scale (post-LN SmoothQuant) stays a float division before the kernel; the
attention matmul inputs (q, k, v) stay fake-quantized in both executions.
"""
from __future__ import annotations

import functools
import logging
from typing import Optional

import torch
from torch import nn

from .modules import quant_linears
from .quantizer import SCALE_MAX, SCALE_MIN, WeightQuantizer

REAL_SETTINGS = ("W8A8", "W4A16")


class Int8Linear(nn.Module):
    """Real W8A8 linear: int8 weight codes [in, out] with per-output scales, per-token int8
    activations, int32 accumulation in torchao's kernel."""

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, bias: Optional[torch.Tensor]):
        super().__init__()
        self.register_buffer("weight_t", codes.to(torch.int8).t().contiguous())
        self.register_buffer("weight_scale", scale.reshape(1, -1).float())
        self.register_buffer("bias", bias.detach().float() if bias is not None else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from torchao.kernel.intmm import int_scaled_matmul

        shape, dtype = x.shape, x.dtype
        x = x.reshape(-1, shape[-1]).float()
        x_scale = (x.abs().amax(-1, keepdim=True) / 127).clamp(SCALE_MIN, SCALE_MAX)
        x_codes = (x / x_scale).round().clamp(-127, 127).to(torch.int8)
        out = int_scaled_matmul(x_codes, self.weight_t, x_scale.contiguous()) * self.weight_scale
        if self.bias is not None:
            out = out + self.bias
        return out.to(dtype).reshape(*shape[:-1], -1)


def _torchao_config(setting: str, device: str, group_size: Optional[int]):
    if setting == "W4A16":
        if torch.device(device).type == "cpu":
            from torchao.prototype.quantization.int4 import PrototypeInt4WeightOnlyConfig

            return PrototypeInt4WeightOnlyConfig(group_size=group_size or 128)
        from torchao.quantization import Int4WeightOnlyConfig

        return Int4WeightOnlyConfig(group_size=group_size or 128, int4_packing_format="tile_packed_to_4d")
    raise ValueError(f"no torchao config for setting {setting}")


def _kernel_dtype(setting: str, device: str) -> torch.dtype:
    # CUDA tinygemm int4 works in bfloat16; everything else keeps float32.
    return torch.bfloat16 if setting == "W4A16" and torch.device(device).type == "cuda" else torch.float32


class _Kernel(nn.Module):
    """A torchao-quantized nn.Linear, called in its dtype and returning the caller's dtype."""

    def __init__(self, linear: nn.Linear, dtype: torch.dtype):
        super().__init__()
        self.linear, self.dtype = linear, dtype

    def forward(self, x):
        return self.linear(x.to(self.dtype)).to(x.dtype)


def _convert(weight: torch.Tensor, bias: Optional[torch.Tensor], setting: str, device: str, group_size) -> nn.Module:
    if setting == "W8A8":
        quantizer = WeightQuantizer(8, symmetric=True)
        codes, scale, _ = quantizer.params(weight.float())
        return Int8Linear(codes, scale, bias).to(device)
    from torchao.quantization import quantize_

    dtype = _kernel_dtype(setting, device)
    linear = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None, device=device, dtype=dtype)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias)
    quantize_(linear, _torchao_config(setting, device, group_size), filter_fn=lambda m, fqn: isinstance(m, nn.Linear))
    linear.requires_grad_(False)
    return _Kernel(linear, dtype)


def _kernel_for(module, setting: str, device: str) -> nn.Module:
    quantizer, bias = module.weight_quantizer, module.bias.detach() if module.bias is not None else None
    if setting == "W8A8" and module.grid is not None and quantizer.symmetric and quantizer.group_size is None:
        codes, scale, _ = module.grid  # the simulated path's own grid: real == simulated
        return Int8Linear(codes, scale, bias).to(device)
    return _convert(module.weight.detach(), bias, setting, device, quantizer.group_width(module.in_features))


@functools.lru_cache(maxsize=None)
def real_kernel_available(setting: str, device: str = "cpu") -> bool:
    """Whether torchao runs ``setting`` for real on ``device`` (probed once on a small linear)."""
    if setting not in REAL_SETTINGS:
        return False
    try:
        kernel = _convert(torch.randn(256, 256), torch.zeros(256), setting, device, 128)
        out = kernel(torch.randn(3, 256, device=device))
        return bool(torch.isfinite(out).all())
    except Exception as exc:  # an absent kernel shows up as any error from torchao
        logging.warning(f"no real {setting} kernel on {device}: {type(exc).__name__}: {exc}")
        return False


def to_real(model: nn.Module, device: str = "cpu", execution: Optional[str] = None) -> str:
    """Swap the simulated matmuls of every frozen QuantLinear for torchao kernels when
    ``execution`` allows it; returns the execution used ("real" or "simulated") and records it
    as ``model.quant_execution``."""
    config = model.quant_config
    if execution not in (None, "real", "simulated"):
        raise ValueError(f"execution must be None, 'real' or 'simulated', got {execution!r}")
    available = real_kernel_available(config.setting, str(device))
    if execution == "real" and not available:
        raise ValueError(f"{config.method} {config.setting}: no real kernel on {device}; "
                         f"real execution exists for {', '.join(REAL_SETTINGS)} (torchao)")
    use_real = available and execution != "simulated"
    if use_real:
        for name, module in quant_linears(model):
            if not module.frozen:
                raise ValueError(f"{config.method}: {name} is not frozen; quantize() the model first")
            group = module.weight_quantizer.group_size
            if config.setting == "W4A16" and module.in_features % module.weight_quantizer.group_width(module.in_features):
                raise ValueError(f"{config.method} W4A16: {name} has {module.in_features} inputs, not a multiple of the group size")
            module.kernel = _kernel_for(module, config.setting, str(device))
    model.quant_execution = "real" if use_real else "simulated"
    return model.quant_execution
