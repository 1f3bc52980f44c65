"""``attend``: attention with a selectable normalizer, eager reference or memory-efficient path."""
import torch

from .flash import flash_attend
from .masks import check_mask, split_mask
from .normalizers import FLASH_NORMALIZERS, attention_weights, get_normalizer, resolve_options

IMPLEMENTATIONS = ("auto", "eager")
FLASH_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def check_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
    """q, k, v must be [batch, heads, length, head_dim] with matching batch, heads and key length."""
    if q.dim() != 4 or k.dim() != 4 or v.dim() != 4:
        name, tensor = next((n, t) for n, t in (("q", q), ("k", k), ("v", v)) if t.dim() != 4)
        raise ValueError(f"{name} must be [batch, heads, length, head_dim], got shape {tuple(tensor.shape)}")
    def shapes():
        return f"q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}"

    if q.shape[:2] != k.shape[:2] or k.shape[:3] != v.shape[:3]:
        raise ValueError(
            "q, k and v must share batch and heads, and k, v their length (repeat grouped KV heads "
            f"before calling attend); got {shapes()}"
        )
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(f"q and k must share head_dim; got {shapes()}")
    if not (q.dtype == k.dtype == v.dtype) or not q.is_floating_point():
        raise TypeError(f"q, k, v must share one floating dtype; got {q.dtype}, {k.dtype}, {v.dtype}")


def eager_attention(q, k, v, *, normalizer="sofa", causal=True, attn_mask=None, scale=None, dropout_p=0.0, **options):
    """Reference attention computed in fp32 (fp64 for fp64 inputs).

    Returns (output [B, H, Lq, Dv] in q's dtype, weights [B, H, Lq, Lk]).
    """
    check_qkv(q, k, v)
    check_mask(attn_mask, q.shape[0], q.shape[1], q.shape[2], k.shape[2])
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    allowed, bias = split_mask(attn_mask, causal, q.shape[2], k.shape[2], q.device)
    compute = torch.promote_types(q.dtype, torch.float32)  # fp32 accumulation, or fp64 for fp64 inputs
    scores = torch.matmul(q.to(compute), k.to(compute).transpose(-1, -2)) * scale
    if bias is not None:
        scores = scores + bias.to(compute)  # an fp64 mask must not turn fp32 scores into fp64
    if allowed is None:
        allowed = torch.ones((), dtype=torch.bool, device=q.device)
    weights = attention_weights(normalizer, scores, allowed, **options)
    if dropout_p > 0.0:
        weights = torch.nn.functional.dropout(weights, p=dropout_p)
    return torch.matmul(weights, v.to(compute)).to(q.dtype), weights


def attend(q, k, v, *, normalizer="sofa", causal=True, attn_mask=None, scale=None, impl="auto", dropout_p=0.0, **options):
    """Attention of q, k, v ([batch, heads, length, head_dim]) with the named normalizer.

    attn_mask: bool (True = may attend) or additive float, broadcastable to [B, H, Lq, Lk] and
    combined with ``causal`` (bottom-right aligned). ``impl="auto"`` uses the memory-efficient
    path for softmax, sofa and softmax1 (fp32/bf16/fp16, no dropout, scale > 0) and the eager
    reference otherwise.
    """
    if impl not in IMPLEMENTATIONS:
        raise ValueError(f"unknown attention impl {impl!r}; supported: {', '.join(IMPLEMENTATIONS)}")
    get_normalizer(normalizer)
    fast = normalizer in FLASH_NORMALIZERS and q.dtype in FLASH_DTYPES and q.device.type in ("cpu", "cuda")
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    # torch's CPU flash kernel returns NaN for a negative scale: those few calls go eager.
    if impl == "auto" and fast and dropout_p == 0.0 and scale > 0:
        check_qkv(q, k, v)
        check_mask(attn_mask, q.shape[0], q.shape[1], q.shape[2], k.shape[2])
        resolve_options(normalizer, options)
        return flash_attend(q, k, v, normalizer, causal, attn_mask, scale)
    out, _ = eager_attention(
        q, k, v, normalizer=normalizer, causal=causal, attn_mask=attn_mask, scale=scale, dropout_p=dropout_p, **options
    )
    return out
