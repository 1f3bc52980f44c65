"""Calibration activations: per-channel statistics of linear inputs, captured decoder-layer
inputs for layer-wise methods, and checks that name the method, the layer and the cause."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Optional

import torch
from torch import nn

from .architectures import decoder_layers


def layer_key(index: int, name: str) -> str:
    """Key of a decoder-layer submodule in statistics dicts and error messages: layers.<i>.<name>."""
    return f"layers.{index}.{name}"


class CalibrationError(ValueError):
    """Missing, too little or non-finite calibration data."""


def check_calibration(calibration, method: str, min_batches: int = 1) -> list[torch.Tensor]:
    """The calibration batches as a list of 2-D LongTensors, or an error saying what is wrong."""
    batches = list(calibration or [])
    if len(batches) < min_batches:
        raise CalibrationError(
            f"{method}: needs at least {min_batches} calibration batch(es) of token ids, got {len(batches)}")
    for i, batch in enumerate(batches):
        if not torch.is_tensor(batch) or batch.dim() != 2 or batch.dtype not in (torch.long, torch.int):
            raise CalibrationError(f"{method}: calibration batch {i} must be a LongTensor [batch, length], got "
                                   f"{getattr(batch, 'shape', type(batch).__name__)} {getattr(batch, 'dtype', '')}")
        if batch.numel() == 0:
            raise CalibrationError(f"{method}: calibration batch {i} is empty")
    return batches


def check_finite(tensor: torch.Tensor, method: str, where: str) -> None:
    """Raise naming ``where`` (a layer/module) when ``tensor`` holds NaN or Inf."""
    if not torch.isfinite(tensor).all():
        kind = "NaN" if torch.isnan(tensor).any() else "Inf"
        raise CalibrationError(f"{method}: {kind} in the calibration activations at {where}")


@dataclass
class ChannelStats:
    """Running per-input-channel statistics of one linear's input over all calibration tokens."""

    absmax: torch.Tensor
    min: torch.Tensor
    max: torch.Tensor
    tokens: int = 0

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).float()
        self.absmax = torch.maximum(self.absmax, x.abs().amax(0))
        self.min = torch.minimum(self.min, x.amin(0))
        self.max = torch.maximum(self.max, x.amax(0))
        self.tokens += x.shape[0]


def statistics_hook(stats: dict[str, ChannelStats], name: str, method: str, where: str):
    """A forward pre-hook that adds its module's input to ``stats[name]`` (a CalibrationError
    naming ``where`` when the input is not finite)."""

    def record(module, args):
        x = args[0]
        check_finite(x, method, where)
        if name not in stats:
            width, device = x.shape[-1], x.device
            stats[name] = ChannelStats(torch.zeros(width, device=device), torch.full((width,), float("inf"), device=device),
                                       torch.full((width,), float("-inf"), device=device))
        stats[name].update(x)

    return record


def _device_of(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def input_statistics(model: nn.Module, calibration: Iterable[torch.Tensor], method: str,
                     modules: Optional[dict[str, nn.Module]] = None) -> dict[str, ChannelStats]:
    """Per-channel max|x|, min and max of the input of every module in ``modules`` (default:
    every nn.Linear / QuantLinear inside the decoder layers), over all calibration tokens.

    Statistics are taken on the model as it is (call with quantizers disabled for FP statistics).
    A non-finite input raises a CalibrationError naming the module."""
    from .modules import QuantLinear

    if modules is None:
        modules = {}
        for i, layer in enumerate(decoder_layers(model, method)):
            for name, module in layer.named_modules():
                if isinstance(module, (nn.Linear, QuantLinear)):
                    modules[layer_key(i, name)] = module
    stats: dict[str, ChannelStats] = {}
    handles = [module.register_forward_pre_hook(statistics_hook(stats, name, method, f"the input of {name}"))
               for name, module in modules.items()]
    device = _device_of(model)
    try:
        for batch in calibration:
            model(batch.to(device), use_cache=False)
    finally:
        for handle in handles:
            handle.remove()
    return stats


class _Captured(Exception):
    pass


@torch.no_grad()
def capture_layer_inputs(model: nn.Module, calibration: Iterable[torch.Tensor], method: str):
    """The (args, kwargs) with which the first decoder layer is called, one pair per calibration
    batch (hidden states, attention mask, position embeddings, ...), for layer-by-layer methods.

    The forward stops at the first layer, so this costs only the embeddings. Feed a layer's
    outputs (``layer(*args, **kwargs)`` returns the hidden states, a tensor or a tuple whose
    first item is it, depending on the family) as the next layer's first argument."""
    layer0 = decoder_layers(model, method)[0]
    captured = []

    def grab(module, args, kwargs):
        captured.append((args, dict(kwargs)))
        raise _Captured

    handle = layer0.register_forward_pre_hook(grab, with_kwargs=True)
    device = _device_of(model)
    try:
        for batch in calibration:
            try:
                model(batch.to(device), use_cache=False)
            except _Captured:
                pass
    finally:
        handle.remove()
    for i, (args, kwargs) in enumerate(captured):
        hidden = args[0] if args else kwargs.get("hidden_states")
        check_finite(hidden, method, f"the input of decoder layer 0 (calibration batch {i})")
    return captured
