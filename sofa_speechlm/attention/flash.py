"""Memory-efficient softmax / SOFA / Softmax1 attention that never forms the L x L score matrix.

All three are softmax attention scaled by a per-row gate g:

    softmax:  g = 1
    softmax1: g = sigmoid(lse(S))             (exp(S)/(1+sum exp(S)) = softmax(S) * g)
    sofa:     g = sigmoid(lse(S) - max(S))    (the max-shifted Softmax1 of the SOFA paper)

so the forward is one fused softmax-attention kernel that also returns lse (torch's CPU flash
kernel, or the CUDA memory-efficient kernel). sofa also needs the row max: on the CPU our own
flash forward (csrc/sofa_flash_cpu.cpp) returns it with lse in the same pass; on CUDA, or
where that kernel cannot be built, a row-max pass over query chunks follows the kernel. Our
kernel also applies the gate itself (with s = sum exp(S - max), sofa's output is
sum exp(S - max) V / (1 + s)), so without gradients (decoding) one kernel call is the whole
attention: SOFA's only extra cost over softmax is tracking the row max.

Backward: the kernel's backward computes dS = P * (dP - rowsum(grad_out * out)). Given
grad_out = g * dO and out = O (the gated output), this is exactly the gradient of g * softmax(S)V
through softmax and lse. For sofa the max also moves with S (the formula as written lets the
gradient flow through max(S)): dL/dm = -(1 - g) * rowsum(dO * O) goes to the key that attains the
row max (the first one on ties, matching torch.max in the eager reference).
"""
import math
import threading
from concurrent.futures import ThreadPoolExecutor

import torch

from .cpu_kernel import fused_forward
from .masks import additive_mask, rows_without_keys

# Query rows per chunk of the row-max pass: a multiple of _BLOCK, sized so that one chunk of
# scores holds about _CHUNK_ELEMENTS fp32 values (4 MiB: few ops per row, still cache-sized).
_BLOCK = 64
_CHUNK_ELEMENTS = 1 << 20


def _first_max(scores):
    """torch.max(scores, -1) (first index on ties), via a vectorised amax over 64-key blocks:
    the first block holding the row max is found on the small block maxima, then searched."""
    k_len = scores.shape[-1]
    if k_len % _BLOCK or k_len == _BLOCK:
        return scores.max(dim=-1)
    blocks = scores.reshape(-1, _BLOCK)  # row r's block b is blocks[r * n_blocks + b]
    n_blocks = k_len // _BLOCK
    values, block = blocks.amax(dim=-1).view(*scores.shape[:-1], n_blocks).max(dim=-1)
    first_row = torch.arange(0, blocks.shape[0], n_blocks, device=scores.device).view(block.shape)
    offset = blocks.index_select(0, (first_row + block).flatten()).argmax(dim=-1).view(block.shape)
    return values, block * _BLOCK + offset


def _row_max(q, k, mask, causal, scale):
    """Max over allowed keys of the scaled scores and its first argmax, per query row ([B, H, Lq]).

    Works on chunks of query rows with all their keys (so ties resolve like torch.max on the
    full row). Under the kernel's causal triangle a chunk's keys split into the block left of
    the diagonal (no masking needed) and the diagonal block; keys right of it are skipped.
    With several intra-op threads, chunks run in parallel on single-threaded workers: one
    chunk's ops are small, and many small multi-threaded ops wait on each other (badly so on a
    shared CPU), while independent chunks never do.
    """
    batch, heads, q_len, _ = q.shape
    k_len = k.shape[2]
    # max commutes with a positive scale: without a bias the raw q.k maxima are scaled at the end.
    qf = q.float() if mask is None else q.float() * scale
    keys = k.float().transpose(-1, -2).contiguous()  # [B, H, D, Lk]: the layout bmm reads fastest
    values = torch.empty(batch, heads, q_len, device=q.device)
    indices = torch.empty(batch, heads, q_len, device=q.device, dtype=torch.long)
    rows = max(_BLOCK, _CHUNK_ELEMENTS // max(1, batch * heads * k_len) // _BLOCK * _BLOCK)
    buffers = {}  # one scores buffer per worker thread, reused by its chunks (no page faults)

    def scores_of(q_rows, key_columns):
        shape = (*q_rows.shape[:-1], key_columns.shape[-1])
        buffer = buffers.get(threading.get_ident())
        if buffer is None:
            buffer = buffers[threading.get_ident()] = q.new_empty(batch * heads * rows * k_len, dtype=torch.float32)
        return torch.matmul(q_rows, key_columns, out=buffer[: math.prod(shape)].view(shape))

    @torch.no_grad()  # grad mode is per thread: pool workers would otherwise record a graph
    def chunk_max(start):
        stop = min(q_len, start + rows)
        parts = [(0, start, False), (start, stop, True)] if causal else [(0, k_len, False)]
        best = None
        for k_start, k_stop, diagonal in parts:
            if k_stop == k_start:
                continue
            scores = scores_of(qf[:, :, start:stop], keys[..., k_start:k_stop])
            if mask is not None:
                scores += mask[..., start:stop, k_start:k_stop]
            if diagonal:
                above = torch.ones(stop - start, stop - start, dtype=torch.bool, device=q.device).triu_(1)
                scores.masked_fill_(above, float("-inf"))
            part_values, part_indices = _first_max(scores)
            part_indices += k_start
            if best is None:
                best = (part_values, part_indices)
            else:  # later keys win only when strictly larger (first index on ties)
                later = part_values > best[0]
                best = (torch.where(later, part_values, best[0]), torch.where(later, part_indices, best[1]))
        values[:, :, start:stop], indices[:, :, start:stop] = best

    starts = range(0, q_len, rows)
    threads = torch.get_num_threads()
    if q.device.type != "cpu" or threads == 1 or len(starts) == 1:
        for start in starts:
            chunk_max(start)
    else:
        with ThreadPoolExecutor(threads, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            list(pool.map(chunk_max, starts))
        torch.set_num_threads(threads)  # the workers' setting is per thread, the stored default is not
    if mask is None:
        values *= scale
    return values, indices


class _CpuKernel:
    """torch's fused CPU flash attention (returns logsumexp; has a matching backward op)."""

    @staticmethod
    def forward(q, k, v, mask, causal, scale):
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(
            q, k, v, 0.0, causal, attn_mask=mask, scale=scale
        )
        return out, lse, lse

    @staticmethod
    def backward(grad_out, q, k, v, mask, out, saved, causal, scale):
        return torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward(
            grad_out, q, k, v, out, saved, 0.0, causal, attn_mask=mask, scale=scale
        )


class _CudaKernel:
    """CUDA memory-efficient attention. UNVERIFIED unless test/bench says otherwise (no GPU in CI)."""

    @staticmethod
    def _bias(mask, q):
        if mask is None:
            return None
        # The kernel wants the bias in q's dtype with the key stride aligned to 16 elements.
        k_len = mask.shape[-1]
        padded = -(-k_len // 16) * 16
        bias = mask.new_zeros(*mask.shape[:-1], padded, dtype=q.dtype)
        bias[..., :k_len] = mask
        return bias[..., :k_len].expand(q.shape[0], q.shape[1], q.shape[2], k_len)

    @staticmethod
    def forward(q, k, v, mask, causal, scale):
        bias = _CudaKernel._bias(mask, q)
        out, lse, seed, offset = torch.ops.aten._scaled_dot_product_efficient_attention(
            q, k, v, bias, True, 0.0, causal, scale=scale
        )
        return out, lse[..., : q.shape[2]], (lse, seed, offset)

    @staticmethod
    def backward(grad_out, q, k, v, mask, out, saved, causal, scale):
        lse, seed, offset = saved
        bias = _CudaKernel._bias(mask, q)
        dq, dk, dv, _ = torch.ops.aten._scaled_dot_product_efficient_attention_backward(
            grad_out, q, k, v, bias, out, lse, seed, offset, 0.0, [True, True, True, False], causal, scale=scale
        )
        return dq, dk, dv


def _kernel(device):
    if device.type == "cpu":
        return _CpuKernel
    if device.type == "cuda":
        return _CudaKernel
    raise NotImplementedError(f"no memory-efficient attention kernel for device {device.type!r}; use impl='eager'")


class GatedSoftmaxAttention(torch.autograd.Function):
    """softmax(S)V * g with g per normalizer (module doc); mask is a constant additive mask."""

    @staticmethod
    def forward(ctx, q, k, v, mask, causal, scale, normalizer):
        kernel = _kernel(q.device)
        empty_rows = rows_without_keys(mask, causal)
        if empty_rows is not None:
            mask = mask.masked_fill(empty_rows.unsqueeze(-1), 0.0)
        gate = argmax = None
        if normalizer == "sofa":
            out, lse, saved, gate, argmax = _sofa_forward(kernel, q, k, v, mask, causal, scale)
        else:
            out, lse, saved = kernel.forward(q, k, v, mask, causal, scale)
            if normalizer == "softmax1":
                gate = torch.sigmoid(lse)
                out = _scale_rows(out, gate)
        if empty_rows is not None:
            gate = (torch.ones_like(lse) if gate is None else gate).masked_fill(empty_rows.expand_as(lse), 0.0)
            out = out.masked_fill(empty_rows.unsqueeze(-1), 0.0)
        ctx.save_for_backward(q, k, v, mask, out, gate, argmax)
        ctx.saved = saved
        ctx.settings = (kernel, causal, scale, normalizer)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, mask, out, gate, argmax = ctx.saved_tensors
        kernel, causal, scale, normalizer = ctx.settings
        grad_in = grad_out if gate is None else (grad_out.float() * gate.unsqueeze(-1)).to(q.dtype)
        grad_in = grad_in.contiguous()
        dq, dk, dv = kernel.backward(grad_in, q, k, v, mask, out, ctx.saved, causal, scale)
        del grad_in
        if normalizer == "sofa":
            # dL/dS[argmax] = dL/dm = -(1 - g) rowsum(dO * O), times scale for q and k.
            row_dot = torch.linalg.vecdot(grad_out.float(), out.float())
            grad_scores = ((gate - 1.0) * row_dot * scale).unsqueeze(-1)
            index = argmax.unsqueeze(-1).expand(*argmax.shape, q.shape[-1])
            if dq.dtype == torch.float32:  # the kernel's fresh outputs: update in place
                dq.addcmul_(grad_scores, k.gather(2, index))
                dk.scatter_add_(2, index, grad_scores * q)
            else:
                dq = (dq.float() + grad_scores * k.float().gather(2, index)).to(q.dtype)
                dk = dk.float().scatter_add_(2, index, grad_scores * q.float()).to(k.dtype)
        return dq, dk, dv, None, None, None, None


def _sofa_forward(kernel, q, k, v, mask, causal, scale):
    """(softmax(S)V * g, lse, the kernel's saved state, gate g, first argmax) for sofa.

    On the CPU the fused kernel returns the row max with the gated softmax (its lse is what
    torch's CPU backward takes); elsewhere, or where it could not be built, a row-max pass
    follows the kernel.
    """
    fused = fused_forward(q, k, v, mask, causal, scale, "sofa") if q.device.type == "cpu" else None
    if fused is not None:
        out, lse, row_max, argmax = fused
        return out.to(q.dtype), lse, lse, torch.sigmoid(lse - row_max), argmax
    out, lse, saved = kernel.forward(q, k, v, mask, causal, scale)
    row_max, argmax = _row_max(q, k, mask, causal, scale)
    gate = torch.sigmoid(lse - row_max)
    return _scale_rows(out, gate), lse, saved, gate, argmax


def _inference_forward(q, k, v, mask, causal, scale, normalizer):
    """The gated output straight from the fused CPU kernel, or None where it does not apply.

    Without a gradient to compute nothing else is needed: no autograd node, no saved state, no
    separate gating pass (a decoding step is a few small ops, so each one counts).
    """
    if q.device.type != "cpu" or normalizer not in ("sofa", "softmax1"):
        return None
    fused = fused_forward(q, k, v, mask, causal, scale, normalizer)
    if fused is None:
        return None
    return fused[0] if q.dtype == torch.float32 else fused[0].to(q.dtype)


def _scale_rows(x, gate):
    """x [..., L, D] times gate [..., L] (fp32), in place for fp32 x (the kernel's fresh output)."""
    if x.dtype == torch.float32:
        return x.mul_(gate.unsqueeze(-1))
    return (x.float() * gate.unsqueeze(-1)).to(x.dtype)


def flash_attend(q, k, v, normalizer, causal, attn_mask, scale):
    """Memory-efficient attention for the normalizers in FLASH_NORMALIZERS ([B, H, L, D] each, scale > 0)."""
    mask, kernel_causal = additive_mask(attn_mask, causal, q.shape[2], k.shape[2], q.device)
    if not (torch.is_grad_enabled() and (q.requires_grad or k.requires_grad or v.requires_grad)):
        out = _inference_forward(q, k, v, mask, kernel_causal, scale, normalizer)
        if out is not None:
            return out
    return GatedSoftmaxAttention.apply(q, k, v, mask, kernel_causal, scale, normalizer)
