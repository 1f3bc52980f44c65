"""Post-training quantization of the HuBERT speech tokenizer (StableQuant, Hong et al. 2025) and
its baselines (max, percentile, MSE, entropy calibration), on stage 5's quantizer primitives.

Static symmetric per-tensor activation scales from calibration histograms, per-output-channel
weight scales; W8A8 linears run for real through stage 5's int8 path (quant/real.py)."""
from .calibrators import CALIBRATORS, METHODS, Histogram
from .layers import SCOPES, quantizable_layers
from .io import load_quantized_tokenizer, save_quantized_tokenizer

__all__ = ["CALIBRATORS", "METHODS", "SCOPES", "Histogram", "load_quantized_tokenizer",
           "quantizable_layers", "save_quantized_tokenizer"]
