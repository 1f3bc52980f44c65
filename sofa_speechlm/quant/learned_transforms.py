"""Equivalent transformations of one decoder layer's weights: OmniQuant's LET and AffineQuant's maps.

Every function takes a dict ``name -> tensor`` of a layer's parameters (names as in
``layer.named_parameters()``) and returns a new dict in which the transform is folded, built from
differentiable tensor ops so that the same code serves the training loop (gradients reach the
scales) and the final fold (no train/deploy mismatch: the v->out pair is folded the fc-fc way in
both). Conventions, row vectors ``x`` and ``y = x W^T + b``:

* norm pair: ``x' = (norm(x) - shift) / s`` feeds ``W diag(s)`` with ``b + W shift``;
* heads pair (v->out, per head): ``v' = (v - shift) B^-1`` so ``W_v <- B^-T W_v``,
  ``b_v <- (b_v - shift) B^-1``, ``W_o <- W_o B^T``, ``b_o <- b_o + W_o shift``; B = diag(s) for LET,
  a (masked) matrix for AffineQuant; with grouped-query attention one B per key/value head serves
  all its query heads;
* query/key pair: ``q' = q B^-1``, ``k' = k B^T`` leave every score ``q k^T`` unchanged.
"""
import torch

MIN_SCALE = 1e-2  # |s| below this is pushed out to +-1e-2 (OmniQuant's guard against blow-ups)


def clamp_scale(scale: torch.Tensor) -> torch.Tensor:
    """Keep the sign, push magnitudes below MIN_SCALE out to MIN_SCALE (gradient passes elsewhere)."""
    return torch.where(scale >= 0, scale.clamp(min=MIN_SCALE), scale.clamp(max=-MIN_SCALE))


def _bias(params, linear, weight):
    name = f"{linear}.bias"
    if name not in params:
        raise ValueError(f"{linear} has no bias, so a shift cannot be folded into it; disable the shift")
    return params[name]


def fold_norm_pair(params: dict, norm: str, linears, scale: torch.Tensor, shift: torch.Tensor | None = None) -> dict:
    """Divide the norm's output by ``scale`` (after subtracting ``shift``) and compensate in ``linears``."""
    out = dict(params)
    out[f"{norm}.weight"] = params[f"{norm}.weight"] / scale
    if f"{norm}.bias" in params:
        bias = params[f"{norm}.bias"]
        out[f"{norm}.bias"] = (bias - shift if shift is not None else bias) / scale
    elif shift is not None:
        raise ValueError(f"{norm} has no bias (RMSNorm?), so it cannot absorb a shift; disable the shift")
    return fold_input_transform(out, linears, scale, shift)


def fold_input_transform(params: dict, linears, scale: torch.Tensor, shift: torch.Tensor | None = None) -> dict:
    """The linears' half of a norm pair, for inputs that are transformed explicitly at run time
    (post-LN OPT: the norm's output also feeds the residual, so it cannot be rescaled)."""
    out = dict(params)
    for linear in linears:
        weight = params[f"{linear}.weight"]
        out[f"{linear}.weight"] = weight * scale
        if shift is not None:
            out[f"{linear}.bias"] = _bias(params, linear, weight) + weight @ shift
    return out


def fold_heads_pair(params: dict, first: str, second: str, groups: int, *, scale=None, matrix=None, shift=None) -> dict:
    """v->out pair. ``scale`` [kv_heads, head_dim] (LET) or ``matrix`` [kv_heads, head_dim, head_dim]
    (AffineQuant, already masked); ``shift`` [kv_heads * head_dim] or None. ``groups`` = query heads
    per key/value head."""
    if (scale is None) == (matrix is None):
        raise ValueError("fold_heads_pair needs exactly one of scale or matrix")
    out = dict(params)
    w1, w2 = params[f"{first}.weight"], params[f"{second}.weight"]
    kv_heads, head_dim = (scale if scale is not None else matrix).shape[:2]
    b1 = params.get(f"{first}.bias")
    if shift is not None:
        if b1 is None:
            raise ValueError(f"{first} has no bias, so it cannot absorb a shift; disable the shift")
        b1 = b1 - shift
    w1h = w1.view(kv_heads, head_dim, -1)
    w2h = w2.view(w2.shape[0], kv_heads * groups, head_dim)
    if scale is not None:
        out[f"{first}.weight"] = (w1h / scale.unsqueeze(-1)).reshape_as(w1)
        if b1 is not None:
            out[f"{first}.bias"] = (b1.view(kv_heads, head_dim) / scale).reshape(-1)
        out[f"{second}.weight"] = (w2h * scale.repeat_interleave(groups, dim=0)).reshape_as(w2)
    else:
        inverse = torch.inverse(matrix)
        out[f"{first}.weight"] = torch.einsum("hab,hai->hbi", inverse, w1h).reshape_as(w1)
        if b1 is not None:
            out[f"{first}.bias"] = torch.einsum("ha,hab->hb", b1.view(kv_heads, head_dim), inverse).reshape(-1)
        expanded = matrix.repeat_interleave(groups, dim=0)
        out[f"{second}.weight"] = torch.einsum("oha,hba->ohb", w2h, expanded).reshape_as(w2)
    if shift is not None:
        full_shift = shift.view(kv_heads, head_dim).repeat_interleave(groups, dim=0).reshape(-1)
        out[f"{second}.bias"] = _bias(params, second, w2) + w2 @ full_shift
    return out


def fold_query_key(params: dict, query: str, key: str, groups: int, *, scale=None, matrix=None) -> dict:
    """q/k pair: ``scale`` [kv_heads, head_dim] or ``matrix`` [kv_heads, head_dim, head_dim]."""
    if (scale is None) == (matrix is None):
        raise ValueError("fold_query_key needs exactly one of scale or matrix")
    out = dict(params)
    kv_heads, head_dim = (scale if scale is not None else matrix).shape[:2]
    wq, wk = params[f"{query}.weight"], params[f"{key}.weight"]
    bq, bk = params.get(f"{query}.bias"), params.get(f"{key}.bias")
    wqh = wq.view(kv_heads * groups, head_dim, -1)
    wkh = wk.view(kv_heads, head_dim, -1)
    if scale is not None:
        query_scale = scale.repeat_interleave(groups, dim=0)
        out[f"{query}.weight"] = (wqh / query_scale.unsqueeze(-1)).reshape_as(wq)
        out[f"{key}.weight"] = (wkh * scale.unsqueeze(-1)).reshape_as(wk)
        if bq is not None:
            out[f"{query}.bias"] = (bq.view_as(query_scale) / query_scale).reshape(-1)
        if bk is not None:
            out[f"{key}.bias"] = (bk.view_as(scale) * scale).reshape(-1)
        return out
    inverse = torch.inverse(matrix).repeat_interleave(groups, dim=0)
    out[f"{query}.weight"] = torch.einsum("hab,hai->hbi", inverse, wqh).reshape_as(wq)
    out[f"{key}.weight"] = torch.einsum("hba,hai->hbi", matrix, wkh).reshape_as(wk)
    if bq is not None:
        out[f"{query}.bias"] = torch.einsum("ha,hab->hb", bq.view(kv_heads * groups, head_dim), inverse).reshape(-1)
    if bk is not None:
        out[f"{key}.bias"] = torch.einsum("ha,hba->hb", bk.view(kv_heads, head_dim), matrix).reshape(-1)
    return out


def tie_rotary_pairs(half_scale: torch.Tensor) -> torch.Tensor:
    """[kv_heads, head_dim/2] -> [kv_heads, head_dim] with s_j = s_{j+d/2}: the q/k scale that
    commutes with rotary embeddings (each rotation acts on the pair (j, j + d/2))."""
    return torch.cat([half_scale, half_scale], dim=-1)


def band_mask(size: int, epoch: int, epochs: int, stability_factor: float, device=None) -> torch.Tensor:
    """AffineQuant's gradual mask for epoch ``epoch`` of ``epochs`` (0-based): ones on the diagonal,
    ``stability_factor`` within the band ``0 < |i-j| < b``, zero outside, with
    ``b = floor((size-1)/(epochs-1) * epoch) + 1`` (the identity pattern at epoch 0, full at the last)."""
    if epochs <= 1:
        raise ValueError(f"AffineQuant's gradual mask needs epochs > 1, got epochs={epochs}")
    band = int((size - 1) / (epochs - 1) * epoch) + 1
    distance = (torch.arange(size, device=device)[:, None] - torch.arange(size, device=device)[None, :]).abs()
    mask = torch.where(distance < band, torch.full((size, size), float(stability_factor), device=device),
                       torch.zeros(size, size, device=device))
    mask.fill_diagonal_(1.0)
    return mask
