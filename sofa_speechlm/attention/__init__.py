"""SOFA attention: a registry of normalizers, an eager reference and a memory-efficient path
(``attend``), and their drop-in use in pretrained HuggingFace OPT / Qwen2 / Llama models
(``apply_attention``; importing this package registers the attention with transformers)."""
from .functional import attend, eager_attention
from .hf import (
    ATTENTION_IMPLEMENTATION,
    AttentionGate,
    apply_attention,
    hf_normalizers,
    restore_attention,
    supported_model_types,
)
from .normalizers import FLASH_NORMALIZERS, NORMALIZERS, get_normalizer

__all__ = [
    "ATTENTION_IMPLEMENTATION",
    "AttentionGate",
    "FLASH_NORMALIZERS",
    "NORMALIZERS",
    "apply_attention",
    "attend",
    "eager_attention",
    "get_normalizer",
    "hf_normalizers",
    "restore_attention",
    "supported_model_types",
]
