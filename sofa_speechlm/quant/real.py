"""Real low-bit execution of frozen QuantLinears through int8/int4 kernels (oneDNN, torchao).

- W8A8: ``Int8Linear``: the frozen int8 weight codes and scales as they are, activations
  quantized per token to int8 with the simulated path's rule (absmax/127, [-127, 127]), an
  int8 x int8 GEMM with integer accumulation, then the two scales. On CPU the GEMM is oneDNN's
  ``onednn.qlinear_pointwise`` (u8 activations with a zero point, weights prepacked once);
  torch._int_mm there is a reference loop (40-70x slower than FP32). Without VNNI, oneDNN's u8 x s8
  products are summed in pairs into int16 (vpmaddubsw) and saturate past 32767, so the shifted
  codes u = x + 128 in [1, 255] are split into u // 2 and u - u // 2 (both <= 128, pairs
  <= 2 * 128 * 127) along a doubled K: exact, at twice the int8 work. A one-off probe uses the
  single pass where it does not saturate (VNNI/AMX). On CUDA: torchao's
  ``int_scaled_matmul`` (torch._int_mm). torchao's own
  ``Int8DynamicActivationInt8WeightConfig`` re-derives scales as absmax/127.5 on [-128, 127],
  a different grid from SmoothQuant's, so real and simulated would disagree by a second
  rounding; running the GEMM on our codes keeps them equal up to float summation order.
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


def _onednn_gemm(u8: torch.Tensor, zero_point: int, packed: torch.Tensor, weight_scale: torch.Tensor) -> torch.Tensor:
    """fp32 (u8 - zero_point) @ W^T * weight_scale, integer accumulation in oneDNN."""
    zeros = torch.zeros(weight_scale.numel(), dtype=torch.int64)
    return torch.ops.onednn.qlinear_pointwise(u8, 1.0, zero_point, packed, weight_scale, zeros, None,
                                              1.0, 0, torch.float32, "none", [], "")


@functools.lru_cache(maxsize=None)
def onednn_int8_saturates() -> bool:
    """Whether oneDNN's single-pass u8 x s8 GEMM saturates int16 pair sums (CPUs without VNNI),
    probed on the worst pair: 255 * 127 twice."""
    codes = torch.tensor([[127] * 4, [-127] * 4], dtype=torch.int8)
    out = _onednn_gemm(torch.full((1, 4), 255, dtype=torch.uint8), 0,
                       torch.ops.onednn.qlinear_prepack(codes, None), torch.ones(2))
    return not torch.equal(out, torch.tensor([[4 * 255 * 127.0, -4 * 255 * 127.0]]))


class Int8Linear(nn.Module):
    """Real W8A8 linear: int8 weight codes [in, out] with per-output scales, per-token int8
    activations, integer accumulation (oneDNN on CPU, torchao's kernel on CUDA)."""

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, bias: Optional[torch.Tensor]):
        super().__init__()
        self.register_buffer("weight_t", codes.to(torch.int8).t().contiguous())
        self.register_buffer("weight_scale", scale.reshape(1, -1).float())
        self.register_buffer("bias", bias.detach().float() if bias is not None else None)
        self.packed, self.split = None, False
        if codes.device.type == "cpu":  # prepacked once; a real model is converted at load, never saved
            self.split = onednn_int8_saturates()
            weight = self.weight_t.t()  # a transposed view: oneDNN's prepack reads it as contiguous
            self.packed = torch.ops.onednn.qlinear_prepack(
                torch.cat([weight, weight], 1) if self.split else weight.contiguous(), None)

    def _cpu_matmul(self, x_codes: torch.Tensor) -> torch.Tensor:
        if self.packed is None:
            raise ValueError("Int8Linear was built on another device; convert it on the CPU (to_real(model, 'cpu'))")
        if not self.split:  # int8 code c as the byte of c + 128: its two's complement byte with the top bit flipped
            return _onednn_gemm(x_codes.view(torch.uint8) ^ 128, 128, self.packed, self.weight_scale.flatten())
        shifted = x_codes.to(torch.int16) + 128
        half = shifted >> 1  # (half - 64) + (shifted - half - 64) = x_codes, both halves <= 128
        halves = torch.cat([half, shifted - half], 1).to(torch.uint8)
        return _onednn_gemm(halves, 64, self.packed, self.weight_scale.flatten())

    def quantize_input(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(int8 codes, scales [rows, 1]) of the fp32 rows ``x``: dynamic per token here; a
        subclass with a calibrated static scale (the HuBERT tokenizer's) overrides it."""
        x_scale = (x.abs().amax(-1, keepdim=True) / 127).clamp(SCALE_MIN, SCALE_MAX)
        return torch.div(x, x_scale).round_().clamp_(-127, 127).to(torch.int8), x_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape, dtype = x.shape, x.dtype
        x = x.reshape(-1, shape[-1]).float()
        x_codes, x_scale = self.quantize_input(x)
        if x.device.type == "cpu":
            out = self._cpu_matmul(x_codes) * x_scale
        else:
            from torchao.kernel.intmm import int_scaled_matmul

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
        return Int8Linear(codes.to(device), scale.to(device), bias.to(device) if bias is not None else None)
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
        return Int8Linear(codes.to(device), scale.to(device), bias.to(device) if bias is not None else None)
    return _convert(module.weight.detach(), bias, setting, device, quantizer.group_width(module.in_features))


@functools.lru_cache(maxsize=None)
def real_kernel_available(setting: str, device: str = "cpu") -> bool:
    """Whether a kernel runs ``setting`` for real on ``device`` (probed once on a small linear)."""
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
