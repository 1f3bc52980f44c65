"""Putting a calibration plan into a HuBERT: fake quantization, or real int8 linears.

Simulated: every planned layer's weight is replaced by its per-output-channel symmetric
quantize-dequantize (stage 5's WeightQuantizer) and its input goes through a static per-tensor
symmetric quantizer with the calibrated clip (a forward pre-hook). Real (W8A8): the planned
nn.Linear layers become ``StaticInt8Linear``, stage 5's Int8Linear with the calibrated input
scale instead of per-token scales; its codes are the simulated path's codes, so both agree up
to float summation order. Convolutions have no int8 kernel here and stay simulated."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from torch import nn

from sofa_speechlm.quant.quantizer import SCALE_MAX, SCALE_MIN, WeightQuantizer, dequantize_codes, qrange, quantize_codes
from sofa_speechlm.quant.real import Int8Linear, real_kernel_available

SETTINGS = ("W8A8", "W6A6", "W4A4")


def parse_setting(setting: str) -> tuple[int, int]:
    """'W8A8' -> (8, 8); only the paper's symmetric settings."""
    name = setting.upper()
    if name not in SETTINGS:
        raise ValueError(f"--settings {setting!r}: expected one of {', '.join(SETTINGS)}")
    weight_bits, act_bits = name[1:].split("A")
    return int(weight_bits), int(act_bits)


@dataclass
class QuantPlan:
    """Static activation clips per layer (scale = clip / qmax) at ``act_bits``; the weights of
    the same layers at ``weight_bits`` (None: activations only, as Algorithm 1's probe)."""

    act_bits: int
    clips: dict[str, float]
    weight_bits: int | None = None
    percentiles: dict[str, float] = field(default_factory=dict)  # cut-off p per layer (report only)


def activation_scale(clip: float, bits: int) -> torch.Tensor:
    return torch.tensor(clip / qrange(bits, True)[1]).clamp(SCALE_MIN, SCALE_MAX)


def fake_quantize_activation(x: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    scale = scale.to(device=x.device, dtype=torch.float32)
    return dequantize_codes(quantize_codes(x.float(), scale, None, bits, True), scale, None).to(x.dtype)


def fake_quantize_weight(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Per output channel (a conv's [out, in, k] as [out, in * k] rows)."""
    flat = weight.detach().float().reshape(weight.shape[0], -1)
    return WeightQuantizer(bits, symmetric=True)(flat).reshape(weight.shape).to(weight.dtype)


@contextmanager
def simulated(layers: dict[str, nn.Module], plan: QuantPlan):
    """The model with ``plan`` fake-quantized while inside; restored afterwards."""
    undo = apply_simulated(layers, plan)
    try:
        yield
    finally:
        undo()


def apply_simulated(layers: dict[str, nn.Module], plan: QuantPlan):
    """Fake-quantizes the planned layers in place; returns a function that restores them."""
    unknown = sorted(set(plan.clips) - set(layers))
    if unknown:
        raise ValueError(f"the plan names layers the model does not have: {', '.join(unknown[:5])}")
    saved, handles = {}, []
    for name, clip in plan.clips.items():
        module = layers[name]
        if plan.weight_bits is not None:
            saved[name] = module.weight.data
            module.weight.data = fake_quantize_weight(module.weight.data, plan.weight_bits)
        scale, bits = activation_scale(clip, plan.act_bits), plan.act_bits
        handles.append(module.register_forward_pre_hook(
            lambda module, args, scale=scale, bits=bits: (fake_quantize_activation(args[0], scale, bits), *args[1:])))

    def undo():
        for handle in handles:
            handle.remove()
        for name, weight in saved.items():
            layers[name].weight.data = weight

    return undo


class StaticInt8Linear(Int8Linear):
    """Stage 5's real W8A8 linear with one calibrated input scale instead of per-token scales."""

    def __init__(self, linear: nn.Linear, input_scale: torch.Tensor):
        codes, scale, _ = WeightQuantizer(8, symmetric=True).params(linear.weight.detach().float().cpu())
        super().__init__(codes, scale, linear.bias.detach().cpu() if linear.bias is not None else None)
        self.register_buffer("input_scale", input_scale.reshape(1, 1).float())

    def quantize_input(self, x: torch.Tensor):
        scale = self.input_scale.to(x.device).expand(x.shape[0], 1)
        return quantize_codes(x, scale, None, 8, True).to(torch.int8), scale


def apply_real(model: nn.Module, layers: dict[str, nn.Module], plan: QuantPlan, device: str = "cpu") -> list[str]:
    """Replaces the planned nn.Linear layers of a W8A8 plan by StaticInt8Linear on ``device``
    (the conversion runs on the CPU, where oneDNN prepacks the weights); returns their names.
    Raises when the plan is not W8A8 or no int8 kernel runs on ``device``."""
    if (plan.weight_bits, plan.act_bits) != (8, 8):
        raise ValueError(f"real int8 execution needs W8A8, the plan is W{plan.weight_bits}A{plan.act_bits}")
    if not real_kernel_available("W8A8", str(device)):
        raise ValueError(f"no int8 kernel on {device}")
    converted = []
    for name, clip in plan.clips.items():
        module = layers[name]
        if not isinstance(module, nn.Linear):
            continue
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name)
        setattr(parent, child, StaticInt8Linear(module, activation_scale(clip, 8)).to(device))
        converted.append(name)
    return converted
