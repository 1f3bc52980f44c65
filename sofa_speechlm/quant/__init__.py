"""Post-training quantization of SpeechLMs (stage 5): quantizer primitives, fake-quant linears,
q/k/v quantization inside the registered attention, a registry of methods (RTN, SmoothQuant,
...), real int8/int4 execution through torchao, and quantized model dirs.

Public API (design.md): ``make_config(method, setting, **hp)``, ``quantize(model, config,
calibration)``, ``save_quantized(model, path)``, ``load_quantized(path)``."""
from .config import (
    METHODS,
    SETTINGS,
    QuantConfig,
    QuantConfigError,
    make_config,
    method_names,
    register_method,
    variant_name,
)
from .core import quantize
from .io import load_quantized, read_quant_config, save_quantized

__all__ = [
    "METHODS",
    "SETTINGS",
    "QuantConfig",
    "QuantConfigError",
    "load_quantized",
    "make_config",
    "method_names",
    "quantize",
    "read_quant_config",
    "register_method",
    "save_quantized",
    "variant_name",
]
