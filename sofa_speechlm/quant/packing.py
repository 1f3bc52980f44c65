"""Integer weight codes in a quantized model dir: unsigned offsets from the grid's minimum,
two per byte up to 4 bits, one per byte up to 8 bits (so W4A16 weights take 1/4 of fp16)."""
from __future__ import annotations

import torch

from .quantizer import qrange


def pack_codes(codes: torch.Tensor, bits: int, symmetric: bool) -> torch.Tensor:
    """int codes [out, in] -> uint8 [out, in/2] (bits <= 4, in even) or [out, in]."""
    qmin, _ = qrange(bits, symmetric)
    unsigned = (codes.to(torch.int16) - qmin).to(torch.uint8)
    if bits <= 4 and unsigned.shape[-1] % 2 == 0:
        return unsigned[..., 0::2] | (unsigned[..., 1::2] << 4)
    if bits > 8:
        raise ValueError(f"cannot pack {bits}-bit codes into bytes")
    return unsigned


def unpack_codes(packed: torch.Tensor, bits: int, symmetric: bool, in_features: int) -> torch.Tensor:
    """Inverse of ``pack_codes``: int16 codes [out, in_features]."""
    qmin, _ = qrange(bits, symmetric)
    if packed.shape[-1] * 2 == in_features:
        low, high = packed & 0x0F, packed >> 4
        unsigned = torch.stack([low, high], dim=-1).reshape(*packed.shape[:-1], in_features)
    else:
        unsigned = packed
    return unsigned.to(torch.int16) + qmin
