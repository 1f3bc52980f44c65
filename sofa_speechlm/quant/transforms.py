"""Exact, foldable per-channel transforms shared by SmoothQuant and the learned methods.

Each function changes parameters so that the model's full-precision function is unchanged
(checked by the tests with quantizers disabled): a factor taken out of the linears' input is
put into the producer of that input.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
from torch import nn

from .modules import QuantLinear

SCALE_FLOOR = 1e-5


@torch.no_grad()
def fold_norm_scale(norm: nn.Module, linears: Sequence[nn.Module], scale: torch.Tensor,
                    shift: Optional[torch.Tensor] = None) -> None:
    """y = norm(x) feeds ``linears``; make them see (y - shift) / scale instead, exactly.

    norm.weight /= s, norm.bias = (bias - shift) / s (LayerNorm; RMSNorm has no bias, so shift
    must be None); each linear: W <- W diag(s), b <- b + W shift (with the original W)."""
    scale = scale.to(norm.weight)
    if shift is not None:
        if getattr(norm, "bias", None) is None:
            raise ValueError(f"{type(norm).__name__} has no bias to absorb a shift")
        shift = shift.to(norm.weight)
        norm.bias.sub_(shift)
    for linear in linears:
        if shift is not None:
            if linear.bias is None:
                raise ValueError("a shifted input needs a linear with a bias")
            linear.bias.add_(linear.weight @ shift)
        linear.weight.mul_(scale)
    norm.weight.div_(scale)
    if getattr(norm, "bias", None) is not None:
        norm.bias.div_(scale)


@torch.no_grad()
def prescale_linears(linears: Sequence[QuantLinear], scale: torch.Tensor) -> None:
    """Where the input has no foldable producer (post-LN): x -> x / s explicitly, W -> W diag(s)."""
    for linear in linears:
        linear.set_input_scale(scale)


@torch.no_grad()
def fold_value_output(v_proj: nn.Module, out_proj: nn.Module, scale: torch.Tensor, kv_groups: int = 1,
                      shift: Optional[torch.Tensor] = None) -> None:
    """Scale the value projection's output channels by 1/s and the output projection's input
    channels by s (exact because attention probabilities mix values linearly and sum to the same
    constant for each channel). ``scale``/``shift`` are sized like v's output (num_kv_heads *
    head_dim) and repeated over the query heads of a group (GQA). A shift moves through
    attention only when every row of probabilities sums to 1 (softmax); with SOFA it does not,
    so shifts are allowed only when the caller guarantees softmax-like attention."""
    scale = scale.to(v_proj.weight)
    repeated = _repeat_heads(scale, kv_groups, out_proj.weight.shape[1])
    if shift is not None:
        shift = shift.to(v_proj.weight)
        v_proj.bias.sub_(shift)
        out_proj.bias.add_(out_proj.weight @ _repeat_heads(shift, kv_groups, out_proj.weight.shape[1]))
    v_proj.weight.div_(scale[:, None])
    if v_proj.bias is not None:
        v_proj.bias.div_(scale)
    out_proj.weight.mul_(repeated)


def _repeat_heads(vector: torch.Tensor, kv_groups: int, width: int) -> torch.Tensor:
    if kv_groups == 1:
        return vector
    heads_kv = vector.numel() * kv_groups // width
    head_dim = width // (heads_kv * kv_groups)
    return vector.view(heads_kv, 1, head_dim).expand(heads_kv, kv_groups, head_dim).reshape(width)


@torch.no_grad()
def fold_query_key(q_proj: nn.Module, k_proj: nn.Module, scale: torch.Tensor, kv_groups: int = 1) -> None:
    """q <- q / s, k <- k * s per channel (q.k unchanged). ``scale`` is sized like k's output and
    repeated for the q heads of a group. Under RoPE, pairs (j, j + d/2) must share a factor."""
    scale = scale.to(q_proj.weight)
    repeated = _repeat_heads(scale, kv_groups, q_proj.weight.shape[0])
    q_proj.weight.div_(repeated[:, None])
    if q_proj.bias is not None:
        q_proj.bias.div_(repeated)
    k_proj.weight.mul_(scale[:, None])
    if k_proj.bias is not None:
        k_proj.bias.mul_(scale)
