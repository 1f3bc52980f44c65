"""Learnable equivalent transformation of one decoder layer (OmniQuant's LET, AffineQuant's matrices).

``LayerTransform(layout, params, stats, ...)`` holds the learnable scales, shifts and matrices of a
layer and maps the layer's full-precision parameters to transformed ones (``forward(params)``)
with the fold functions of ``transforms``; the blockwise trainer calls it at every step and once
more for the final fold, so training and deployment use the same transform.
"""
from dataclasses import dataclass

import torch
from torch import nn

from . import learned_transforms as transforms
from .architectures import architecture


@dataclass(frozen=True)
class LetLayout:
    """Where the transformable pairs of one decoder layer are (names relative to the layer)."""

    norm_pairs: tuple  # ((norm, (linear, ...)), ...): the first linear's input statistics set the scale
    heads_pair: tuple  # (value projection, output projection)
    query_key: tuple  # (query projection, key projection)
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rotary: bool  # q/k scales must be tied on rotary pairs (j, j + head_dim/2)
    post_norm: bool  # norm after the residual add (OPT-350m): norm pairs become the linears' input transforms

    @property
    def groups(self) -> int:
        return self.num_heads // self.num_kv_heads


def smooth_scale(act_absmax: torch.Tensor, weight_absmax: torch.Tensor, alpha: float) -> torch.Tensor:
    """SmoothQuant/OmniQuant init s = max|X|^alpha / max|W|^(1-alpha), both clamped away from 0."""
    return (act_absmax.clamp(min=1e-5).pow(alpha) / weight_absmax.clamp(min=1e-5).pow(1 - alpha)).clamp(min=1e-5)


class LayerTransform(nn.Module):
    """Learnable transform of one layer.

    ``stats[linear]``: the ``calibration.ChannelStats`` (absmax, min, max per input channel) of
    that linear's input on the calibration data. ``shift``: fold per-channel shifts too (norm pairs with a bias, v->out when
    ``shift_heads``); ``affine_heads``/``affine_query_key``: AffineQuant matrices (initialised from
    the diagonal LET scale / identity) instead of diagonal scales; the matrices are multiplied by
    ``heads_mask`` (set per epoch by the trainer through ``set_mask``) before use.
    """

    def __init__(self, layout: LetLayout, params: dict, stats: dict, *, alpha: float, shift: bool,
                 shift_heads: bool, affine_heads: bool = False, affine_query_key: bool = False):
        super().__init__()
        self.layout = layout
        self.norm_names = []
        self.norm_scales = nn.ParameterList()
        self.norm_shifts = nn.ParameterList()
        for norm, linears in layout.norm_pairs:
            first = linears[0]
            scale = smooth_scale(stats[first].absmax, params[f"{first}.weight"].abs().amax(dim=0), alpha)
            self.norm_names.append((norm, linears))
            self.norm_scales.append(nn.Parameter(scale.clone()))
            # Post-norm layers take scale and shift as the linears' explicit input transform
            # (QuantLinear.input_shift / input_scale) instead of folding them into the norm.
            if shift and f"{norm}.bias" in params:
                self.norm_shifts.append(nn.Parameter(((stats[first].max + stats[first].min) / 2).clone()))
            else:
                self.norm_shifts.append(nn.Parameter(torch.zeros(0), requires_grad=False))
        v_proj, o_proj = layout.heads_pair
        kv, d, g = layout.num_kv_heads, layout.head_dim, layout.groups
        o_stats = stats[o_proj]
        act = o_stats.absmax.view(kv, g, d).amax(dim=1)
        wmax = params[f"{o_proj}.weight"].abs().amax(dim=0).view(kv, g, d).amax(dim=1)
        heads_scale = smooth_scale(act, wmax, alpha)
        self.affine_heads = affine_heads
        if affine_heads:
            self.heads = nn.Parameter(torch.diag_embed(heads_scale))
        else:
            self.heads = nn.Parameter(heads_scale.clone())
        if shift_heads:
            midpoint = ((o_stats.max + o_stats.min) / 2).view(kv, g, d).mean(dim=1).reshape(-1)
            self.heads_shift = nn.Parameter(midpoint.clone())
        else:
            self.heads_shift = None
        self.affine_query_key = affine_query_key
        if affine_query_key:
            if layout.rotary:
                raise ValueError("an affine q/k matrix does not commute with rotary embeddings; "
                                 "use the diagonal q/k scale (tied on rotary pairs) for this model")
            self.query_key = nn.Parameter(torch.eye(d).expand(kv, d, d).clone())
        else:
            self.query_key = nn.Parameter(torch.ones(kv, d // 2 if layout.rotary else d))
        self.register_buffer("heads_mask", torch.ones(d, d), persistent=False)

    def set_mask(self, mask: torch.Tensor):
        """AffineQuant's gradual mask (head_dim x head_dim) for the coming epoch."""
        self.heads_mask = mask.to(self.heads_mask)

    def matrices_masked(self):
        heads = self.heads * self.heads_mask if self.affine_heads else None
        query_key = self.query_key * self.heads_mask if self.affine_query_key else None
        return heads, query_key

    def forward(self, params: dict) -> dict:
        """The layer's parameters with the transform folded in (differentiable)."""
        layout = self.layout
        out = dict(params)
        for (norm, linears), scale, shift in zip(self.norm_names, self.norm_scales, self.norm_shifts):
            scale = transforms.clamp_scale(scale)
            shift = shift if shift.numel() else None
            if layout.post_norm:
                out = transforms.fold_input_transform(out, linears, scale, shift)
                out.update({f"{linear}.input_scale": scale for linear in linears})
                if shift is not None:
                    out.update({f"{linear}.input_shift": shift for linear in linears})
            else:
                out = transforms.fold_norm_pair(out, norm, linears, scale, shift)
        heads, query_key = self.matrices_masked()
        v_proj, o_proj = layout.heads_pair
        if heads is None:
            out = transforms.fold_heads_pair(out, v_proj, o_proj, layout.groups,
                                             scale=transforms.clamp_scale(self.heads), shift=self.heads_shift)
        else:
            out = transforms.fold_heads_pair(out, v_proj, o_proj, layout.groups, matrix=heads, shift=self.heads_shift)
        q_proj, k_proj = layout.query_key
        if query_key is None:
            scale = transforms.clamp_scale(self.query_key)
            if layout.rotary:
                scale = transforms.tie_rotary_pairs(scale)
            out = transforms.fold_query_key(out, q_proj, k_proj, layout.groups, scale=scale)
        else:
            out = transforms.fold_query_key(out, q_proj, k_proj, layout.groups, matrix=query_key)
        return out


def layout_of(model) -> LetLayout:
    """The LET layout of a causal LM's decoder layers, read from the PTQ architecture table."""
    arch = architecture(model)
    config = model.config
    return LetLayout(
        norm_pairs=arch.smoothing, heads_pair=arch.value_output, query_key=arch.query_key,
        num_heads=config.num_attention_heads, num_kv_heads=config.num_attention_heads // arch.kv_groups(config),
        head_dim=arch.head_dim(config), rotary=arch.rotary, post_norm=arch.post_ln(config))
