"""Fake quantization of the attention matmul inputs (q, k, v) inside the registered attention.

The toolkit's attention function (``sofa_speechlm.attention.hf.sofa_attention_forward``) calls
an attention module's ``qkv_quantizer`` on the head-split query, key and value, so the SOFA
(or softmax) normalizer stays exactly as the model has it and unquantized.

Granularity: dynamic, per token and per head (one range per head_dim vector), at the
activation bit-width. Qwen2's q/k are quantized after RoPE and k/v per KV head before the
grouped-query repetition; OPT's q already carries the 1/sqrt(d) factor (HF multiplies it in
q_proj's output), which per-token quantization is invariant to. Because a token's range
depends on that token and head only, the keys/values of a KV cache (stored unquantized, and
re-quantized at every decoding step) quantize to the same values as in a full forward: cached
decoding equals the full-sequence forward. (SmoothQuant/OmniQuant OPT quantize per token over
the full hidden size before the head split; per head is finer and cache-consistent.)
"""
from __future__ import annotations

from torch import nn

from sofa_speechlm.attention import ATTENTION_IMPLEMENTATION, apply_attention
from sofa_speechlm.attention.hf import QKV_QUANTIZER, CONFIG_KEY

from .quantizer import ActQuantizer


class QKVQuantizer(nn.Module):
    """Per-token-per-head fake quantizers for query, key and value."""

    def __init__(self, bits: int, symmetric: bool = True):
        super().__init__()
        self.query, self.key, self.value = (ActQuantizer(bits, symmetric) for _ in range(3))

    def forward(self, query, key, value):
        return self.query(query), self.key(key), self.value(value)


def ensure_registered_attention(model) -> None:
    """Route a model using HF's own attention (SDPA/eager softmax) through the registered function
    with the same math, so the q/k/v hook applies; SOFA models already use it."""
    if model.config._attn_implementation != ATTENTION_IMPLEMENTATION or getattr(model.config, CONFIG_KEY, None) is None:
        apply_attention(model, "softmax")


def install_qkv_quantizers(model, attention_modules, bits: int, symmetric: bool = True) -> None:
    """Give every attention module a q/k/v quantizer at ``bits`` (no-op when bits >= 16)."""
    if bits >= 16:
        return
    ensure_registered_attention(model)
    reference = next(model.parameters())
    for module in attention_modules:
        setattr(module, QKV_QUANTIZER, QKVQuantizer(bits, symmetric).to(reference.device))


def attention_quantizers(model):
    """Every ActQuantizer of the q/k/v hooks of ``model``."""
    found = []
    for module in model.modules():
        quantizer = getattr(module, QKV_QUANTIZER, None)
        if isinstance(quantizer, QKVQuantizer):
            found += [quantizer.query, quantizer.key, quantizer.value]
    return found
