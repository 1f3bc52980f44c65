"""Quantized model dirs (stage 5 output) and loading them back.

Layout of a variant dir:
  config.json          the HF model config (with the attention setting ``sofa_attention``)
  model.safetensors    every tensor of the model, except that each quantized linear weight is
                       replaced by ``<linear>.qweight`` (uint8 packed codes), ``<linear>.qscale``
                       (fp32, one per row or row-group) and, when asymmetric, ``<linear>.qzero``
                       (uint8); post-LN pre-transforms are ``<linear>.input_scale`` / ``input_shift``
  quant_config.yaml    method, setting, bits, hyperparameters, calibration, execution, source, ...
  .done                written last: a dir without it is incomplete
Tied embeddings are stored once. Reloading rebuilds the model from config.json, re-installs the
quantizers from quant_config.yaml and sets every weight from its codes with the arithmetic of
the fake quantizer, so the reloaded model's logits are identical.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import torch
import yaml

from .config import config_from_dict
from .modules import QuantLinear, quant_linears, set_quantizers

WEIGHTS = "model.safetensors"
QUANT_CONFIG = "quant_config.yaml"
HF_CONFIG = "config.json"
DONE = ".done"


def is_complete(path) -> bool:
    return (Path(path) / DONE).is_file()


def read_quant_config(path) -> dict:
    """quant_config.yaml of a variant dir as a dict."""
    file = Path(path) / QUANT_CONFIG
    if not file.is_file():
        raise FileNotFoundError(f"{path}: {QUANT_CONFIG} is missing: not a quantized model dir")
    with open(file) as f:
        return yaml.safe_load(f)


def execution_of(config) -> str:
    """'real' when the setting has an int kernel (W8A8, W4A16) somewhere, else 'simulated'."""
    from .real import REAL_SETTINGS

    return "real" if config.setting in REAL_SETTINGS else "simulated"


def _state_to_save(model) -> dict:
    state, seen = {}, {}
    quantized = {name: module for name, module in quant_linears(model) if module.grid is not None}
    skip = {f"{name}.weight" for name in quantized}
    for key, tensor in model.state_dict().items():
        if key in skip:
            continue
        pointer = (tensor.data_ptr(), tensor.shape, tensor.stride())
        if pointer in seen:  # tied weights: stored once
            continue
        seen[pointer] = key
        state[key] = tensor.detach().cpu().contiguous()
    from .packing import pack_codes

    for name, module in quantized.items():
        quantizer = module.weight_quantizer
        codes, scale, zero = module.grid
        state[f"{name}.qweight"] = pack_codes(codes.cpu(), quantizer.bits, quantizer.symmetric)
        state[f"{name}.qscale"] = scale.float().cpu().contiguous()
        if zero is not None:
            state[f"{name}.qzero"] = zero.cpu().to(torch.uint8)
    return state


def save_quantized(model, path, **metadata) -> Path:
    """Write ``model`` (returned by ``quantize``) as a variant dir; ``metadata`` (calibration,
    source, time_s, ...) goes into quant_config.yaml. The ``.done`` marker is written last."""
    from safetensors.torch import save_file

    config = getattr(model, "quant_config", None)
    if config is None:
        raise ValueError("save_quantized: the model was not quantized with sofa_speechlm.quant.quantize")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / DONE).unlink(missing_ok=True)
    model.config.to_json_file(str(path / HF_CONFIG))
    save_file(_state_to_save(model), str(path / WEIGHTS), metadata={"format": "pt"})
    attention = getattr(model.config, "sofa_attention", None)
    record = {
        "method": config.method,
        "setting": config.setting,
        "w_bits": config.w_bits,
        "a_bits": config.a_bits,
        "hyperparameters": config.hyperparameters(),
        "execution": execution_of(config),
        "model_type": model.config.model_type,
        "attention": attention["normalizer"] if attention else "softmax",
        **metadata,
    }
    with open(path / QUANT_CONFIG, "w") as f:
        yaml.safe_dump(record, f, sort_keys=False)
    (path / DONE).write_text("")
    return path


def load_quantized(path, device: str = "cpu", execution: Optional[str] = None):
    """A variant dir -> HF causal LM in eval mode, callable like the full-precision one.

    ``execution``: None = real kernels where the setting has one on ``device``, else simulated;
    "simulated" or "real" force it (real raises when there is no kernel)."""
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoModelForCausalLM

    from sofa_speechlm.attention import restore_attention

    from .core import prepare
    from .packing import unpack_codes
    from .real import to_real

    path = Path(path)
    if not is_complete(path):
        raise FileNotFoundError(f"{path}: no {DONE} marker: not a complete quantized model dir")
    record = read_quant_config(path)
    config = config_from_dict({"method": record["method"], "setting": record["setting"], "w_bits": record["w_bits"],
                               "a_bits": record["a_bits"], **record["hyperparameters"]})
    hf_config = AutoConfig.from_pretrained(str(path))
    model = AutoModelForCausalLM.from_config(hf_config, dtype=torch.float32)
    restore_attention(model)
    model.eval()
    prepare(model, config)
    state = load_file(str(path / WEIGHTS))
    modules = dict(quant_linears(model))
    for name, module in modules.items():
        for buffer in ("input_scale", "input_shift"):  # buffers that are None until a method sets them
            if f"{name}.{buffer}" in state:
                setattr(module, buffer, state[f"{name}.{buffer}"].clone())
        if f"{name}.qweight" in state:
            quantizer = module.weight_quantizer
            codes = unpack_codes(state.pop(f"{name}.qweight"), quantizer.bits, quantizer.symmetric, module.in_features)
            zero = state.pop(f"{name}.qzero", None)
            module.set_grid(codes, state.pop(f"{name}.qscale"), zero.float() if zero is not None else None)
    missing, unexpected = model.load_state_dict(state, strict=False)
    quantized_weights = {f"{name}.weight" for name, m in modules.items() if m.grid is not None}
    model.tie_weights()
    missing = [k for k in missing if k not in quantized_weights and not _is_tied(model, k)]
    if missing or unexpected:
        raise ValueError(f"{path / WEIGHTS}: does not match the model of {HF_CONFIG}: "
                         f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    for module in modules.values():
        module.frozen = True
    set_quantizers(model, True)
    model.quant_config = config
    model.to(device)
    to_real(model, device=device, execution=execution)
    return model.eval()


def _is_tied(model, key: str) -> bool:
    output = model.get_output_embeddings()
    return output is not None and key.endswith("lm_head.weight") and output.weight is model.get_input_embeddings().weight


def dir_size(path) -> int:
    """Bytes of all files in a dir (for stage 5's summary)."""
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)
