"""``quantize(model, config, calibration)``: the one entry point every method goes through.

Steps: check the model and the calibration data; swap every decoder linear for a QuantLinear
and install the attention q/k/v quantizers (all disabled); run the method (its transforms and,
for learned methods, training); switch every quantizer on; put the weights on their grid
(``freeze``); record the config on the model (``model.quant_config``) for ``save_quantized``.
Embeddings, norms, the LM head and the attention normalizer stay in full precision.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from .architectures import architecture, decoder_layers, layer_module
from .attention import install_qkv_quantizers
from .calibration import check_calibration
from .config import QuantConfig, get_method
from .modules import QuantLinear, quant_linears, set_quantizers


def replace_linears(model: nn.Module, config: QuantConfig) -> None:
    """Swap each decoder-layer linear of the architecture table for a (disabled) QuantLinear."""
    arch = architecture(model, config.method)
    for index, layer in enumerate(decoder_layers(model, config.method)):
        for name in arch.linears:
            linear = layer_module(layer, name, config.method, index)
            if isinstance(linear, QuantLinear):
                continue
            if not isinstance(linear, nn.Linear):
                raise TypeError(f"{config.method}: layer {index} module '{name}' is a {type(linear).__name__}, not a Linear")
            quantized = QuantLinear.from_linear(
                linear, w_bits=config.w_bits, a_bits=config.a_bits, w_symmetric=config.w_symmetric,
                a_symmetric=config.a_symmetric, group_size=config.group_size)
            width = quantized.weight_quantizer.group_width(quantized.in_features)
            if quantized.weight_quantizer.active and quantized.in_features % width:
                raise ValueError(f"{config.method} {config.setting}: layer {index} '{name}' has {quantized.in_features} "
                                 f"inputs, not a multiple of the group size {config.group_size}")
            quantized.set_quantizers(False)
            parent_name, _, child = name.rpartition(".")
            setattr(layer.get_submodule(parent_name) if parent_name else layer, child, quantized)


def prepare(model: nn.Module, config: QuantConfig) -> nn.Module:
    """QuantLinears and q/k/v quantizers in place, all disabled: the model still computes FP."""
    arch = architecture(model, config.method)
    replace_linears(model, config)
    if config.qkv and config.a_bits < 16:
        attentions = [layer_module(layer, arch.attention, config.method, i)
                      for i, layer in enumerate(decoder_layers(model, config.method))]
        install_qkv_quantizers(model, attentions, config.a_bits, config.a_symmetric)
    set_quantizers(model, False)
    return model


def quantize(model: nn.Module, config: QuantConfig, calibration: Sequence[torch.Tensor] = ()) -> nn.Module:
    """Quantize a HuggingFace OPT/Qwen2/Llama causal LM in place with ``config``'s method; returns it (eval mode).

    ``calibration``: list of LongTensor token-id batches [batch, length]; may be empty for
    methods that need none (RTN)."""
    if getattr(model, "quant_config", None) is not None:
        raise ValueError(f"{config.method}: the model is already quantized ({model.quant_config.method} {model.quant_config.setting})")
    entry = get_method(config.method)
    config.validate()
    calibration = check_calibration(calibration, config.method) if entry.config_class.needs_calibration else list(calibration or [])
    was_training = model.training
    model.eval()
    prepare(model, config)
    model = entry.quantize(model, config, calibration) or model
    set_quantizers(model, True)
    for _, module in quant_linears(model):
        module.freeze()
    model.quant_config = config
    model.train(was_training)
    return model.eval()
