"""AffineQuant (Ma et al., 2024): OmniQuant's layer-by-layer loop with affine matrices in place of
diagonal scales, as bytedance/AffineQuant@0f3ba93 does it, with these choices:

- v -> out: one head_dim x head_dim matrix per (KV) head (block-diagonal), initialised from the
  LET scale diag(s) (computed with |W|; the reference omits the abs); q/k: one matrix per head,
  initialised to the identity (``qk_matrix``; models with rotary q/k (Qwen2) keep the diagonal
  q/k scale tied on rotary pairs, because a full matrix does not commute with the rotation).
  Norm pairs keep OmniQuant's diagonal LET (the reference's optional LN matrices need a stored
  inverse applied at run time and are not implemented).
- gradual mask: in epoch e of E the matrix is multiplied by M with M_ii = 1, M_ij =
  ``stability_factor`` for 0 < |i-j| < floor((D-1)/(E-1) e) + 1, else 0 (needs E > 1);
  stability_factor 0.01 as the SOFA paper uses (the reference's default is 1.0).
- the inverse is recomputed (torch.inverse, fp32) at every step; training and the final fold use
  the same transform. Everything else (LWC, lrs, shifts, post-LN, quantizers) as OmniQuant, but
  per-channel weights by default (the reference's default; W4A16 uses groups of 128).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..blockwise import BlockwiseOptions, train_blockwise
from ..config import QuantConfigError, register_method
from .omniquant import OmniQuantConfig


@dataclass
class AffineQuantConfig(OmniQuantConfig):
    group_size: Optional[int] = None
    let: Optional[bool] = True
    stability_factor: float = 0.01  # the paper's value; the reference code defaults to 1.0
    qk_matrix: bool = True

    def validate(self) -> None:
        super().validate()
        name = self.method or "affinequant"
        if not self.let:
            raise QuantConfigError(f"{name}: the affine matrices are the method; let must be true")
        if self.epochs <= 1:
            raise QuantConfigError(f"{name}: the gradual mask needs epochs > 1 (its band grows over the epochs), "
                                   f"got epochs={self.epochs}")
        if not 0.0 <= self.stability_factor <= 1.0:
            raise QuantConfigError(f"{name}: stability_factor must lie in [0, 1], got {self.stability_factor}")

    def blockwise_options(self) -> BlockwiseOptions:
        options = super().blockwise_options()
        options.affine_heads = True
        options.affine_query_key = self.qk_matrix
        options.stability_factor = self.stability_factor
        return options


@register_method("affinequant", AffineQuantConfig, "AffineQuant: affine equivalent transforms with a gradual mask, layer by layer")
def quantize_affinequant(model, config, calibration):
    model.quant_block_mse = train_blockwise(model, config, calibration, config.blockwise_options())
    return model
