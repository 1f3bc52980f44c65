"""Mask conventions shared by the eager and the memory-efficient paths.

A mask is either boolean (True = may attend, as in torch SDPA) or an additive float mask (as
HuggingFace passes them): there, -inf or any value at or below half the dtype's lowest value
(HF writes ``finfo.min``) forbids the key, other values are added to the scores as a bias.
``causal`` is aligned bottom-right: query i of Lq sees keys j <= i + Lk - Lq, which is what a
KV cache needs (for Lq == Lk it is the usual lower triangle). Masks are constants (no gradient).
"""
import torch


def check_mask(attn_mask: torch.Tensor | None, batch: int, heads: int, q_len: int, k_len: int) -> None:
    """Raise a clear error when the mask's dtype or shape cannot serve [B, H, Lq, Lk] scores."""
    if attn_mask is None:
        return
    if attn_mask.dtype != torch.bool and not attn_mask.is_floating_point():
        raise TypeError(f"attn_mask must be bool (True = may attend) or an additive float mask, got {attn_mask.dtype}")
    target = (batch, heads, q_len, k_len)
    try:
        broadcast = torch.broadcast_shapes(tuple(attn_mask.shape), target)
    except RuntimeError:
        broadcast = None
    if broadcast != target:
        raise ValueError(
            f"attn_mask of shape {tuple(attn_mask.shape)} is not broadcastable to [batch, heads, q_len, k_len] = {list(target)}"
        )


def causal_allowed(q_len: int, k_len: int, device) -> torch.Tensor:
    """[Lq, Lk] boolean lower triangle aligned bottom-right (see module doc)."""
    rows = torch.arange(q_len, device=device).unsqueeze(-1) + (k_len - q_len)
    return torch.arange(k_len, device=device) <= rows


def split_mask(attn_mask: torch.Tensor | None, causal: bool, q_len: int, k_len: int, device):
    """(allowed bool mask or None, float bias on allowed keys or None), causal folded in."""
    allowed, bias = None, None
    if attn_mask is not None:
        attn_mask = attn_mask.detach().to(device)
        if attn_mask.dtype == torch.bool:
            allowed = attn_mask
        else:
            allowed = attn_mask > torch.finfo(attn_mask.dtype).min / 2
            bias = attn_mask.to(torch.promote_types(attn_mask.dtype, torch.float32)).masked_fill(~allowed, 0.0)
    if causal:
        triangle = causal_allowed(q_len, k_len, device)
        allowed = triangle if allowed is None else allowed & triangle
    return allowed, bias


def additive_mask(attn_mask: torch.Tensor | None, causal: bool, q_len: int, k_len: int, device):
    """fp32 additive mask with -inf on forbidden keys (None when no mask is needed) and a flag
    telling whether the kernel's own top-left causal masking must still be applied.

    The kernel's ``is_causal`` is used only for Lq == Lk (where top-left equals bottom-right);
    otherwise the triangle is written into the mask.
    """
    if attn_mask is None and (not causal or q_len == k_len):
        return None, causal
    if attn_mask is None and q_len == 1:  # a decoding step: its one query sees every key
        return None, False
    kernel_causal = causal and q_len == k_len
    allowed, bias = split_mask(attn_mask, causal and not kernel_causal, q_len, k_len, device)
    bias = None if bias is None else bias.float()  # an fp64 mask too: the kernels take fp32
    if allowed is None:
        return bias, kernel_causal
    zeros = torch.zeros((), device=device) if bias is None else bias
    mask = torch.where(allowed, zeros, float("-inf"))
    # Kernels and the row-max pass slice query rows and key columns: give both their full size.
    return mask.expand(torch.broadcast_shapes(mask.shape, (1, 1, q_len, k_len))), kernel_causal


def rows_without_keys(mask: torch.Tensor | None, kernel_causal: bool) -> torch.Tensor | None:
    """Boolean [..., Lq] marking rows of an additive mask where every key is forbidden (None if none)."""
    if mask is None:
        return None
    forbidden = mask == float("-inf")
    if kernel_causal:
        # Under the kernel's triangle only keys j <= i count.
        q_len, k_len = mask.shape[-2:]
        forbidden = forbidden | ~causal_allowed(q_len, k_len, mask.device)
    empty = forbidden.all(dim=-1)
    return empty if bool(empty.any()) else None
