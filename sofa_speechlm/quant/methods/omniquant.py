"""OmniQuant (Shao et al., 2024): learnable weight clipping (LWC) and a learnable equivalent
transformation (LET), trained layer by layer (quant/blockwise.py), as OpenGVLab/OmniQuant@95fae1b
does it, with these choices:

- LWC on every quantized weight, per output row or group (group 128 by default, the SOFA paper's
  setting); LET on the norm -> q/k/v and norm -> fc1 (gate/up) pairs, v -> out and q/k; init
  s = max|X|^alpha / max|W|^(1-alpha) with the linear's own weight, shifts = per-channel
  (max+min)/2 of the calibration inputs, q/k scale ones.
- v -> out is transformed the fc-fc way both in training and in the final fold (the reference
  trains with a different, inexact v-transform and deploys the exact one).
- the v -> out shift only where attention rows sum to 1 (softmax): with SOFA (softmax1) a shift
  of the values does not pass through attention unchanged. No shift on RMSNorm (Qwen2).
- OPT post-LN (OPT-350m): the norm's output also feeds the residual, so the norm-pair scale and
  shift become the linears' explicit input transform (QuantLinear.input_shift / input_scale). Qwen2: q/k scales tied on rotary pairs (j, j+d/2),
  v -> out scale per KV head, repeated over the query heads of its group.
- weights and activations asymmetric (the reference quantizer); LET and shifts only when the
  activations are quantized (the reference's weight-only scripts use LWC alone).
- AdamW without weight decay, LET lr 5e-3, LWC lr 1e-2, 20 epochs, one calibration sequence per
  step (the reference scripts), fp32; alpha 0.75 at W4A4 (the reference's OPT W4A4 scripts),
  0.5 otherwise.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..blockwise import BlockwiseOptions, train_blockwise
from ..config import QuantConfig, QuantConfigError, register_method


@dataclass
class OmniQuantConfig(QuantConfig):
    w_symmetric: bool = False
    a_symmetric: bool = False
    group_size: Optional[int] = 128
    epochs: int = 20
    alpha: Optional[float] = None  # LET init migration strength; None: 0.75 at 4-bit activations, else 0.5
    let: Optional[bool] = None    # None: on when activations are quantized
    lwc: bool = True
    shift: Optional[bool] = None  # None: on when activations are quantized
    let_lr: float = 5e-3
    lwc_lr: float = 1e-2
    train_batch_size: int = 1     # calibration sequences per training step (the reference's batch size 1)

    needs_calibration = True

    def validate(self) -> None:
        super().validate()
        name = self.method or "omniquant"
        if self.let is None:
            self.let = self.a_bits < 16
        if self.shift is None:
            self.shift = self.a_bits < 16
        if self.alpha is None:
            self.alpha = 0.75 if self.a_bits <= 4 else 0.5
        if self.train_batch_size < 1:
            raise QuantConfigError(f"{name}: train_batch_size must be >= 1, got {self.train_batch_size}")
        if not 0.0 <= self.alpha <= 1.0:
            raise QuantConfigError(f"{name}: alpha must lie in [0, 1], got {self.alpha}")
        if self.epochs < 0:
            raise QuantConfigError(f"{name}: epochs must be >= 0, got {self.epochs}")
        for key in ("let_lr", "lwc_lr"):
            if getattr(self, key) <= 0:
                raise QuantConfigError(f"{name}: {key} must be positive, got {getattr(self, key)}")

    def blockwise_options(self) -> BlockwiseOptions:
        return BlockwiseOptions(epochs=self.epochs, let=self.let, lwc=self.lwc and self.w_bits < 16, alpha=self.alpha,
                                let_lr=self.let_lr, lwc_lr=self.lwc_lr, shift=self.shift, batch_size=self.train_batch_size)


@register_method("omniquant", OmniQuantConfig, "OmniQuant: learnable weight clipping + equivalent transformation, layer by layer")
def quantize_omniquant(model, config, calibration):
    model.quant_block_mse = train_blockwise(model, config, calibration, config.blockwise_options())
    return model
