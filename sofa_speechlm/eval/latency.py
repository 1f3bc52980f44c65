"""Per-token decoding latency at batch size 1 (the workshop paper's Table 4): one prompt, then
`new_tokens` single-token steps with the KV cache, greedy, never stopping at <sos/eos>."""

from __future__ import annotations

import time
from typing import Sequence

import torch


@torch.inference_mode()
def ms_per_token(model: torch.nn.Module, prompt: Sequence[int], new_tokens: int = 64, warmup: int = 8, repeats: int = 3) -> float:
    """Median over `repeats` of the mean wall time (ms) of one decoding step after the prompt."""
    device = next(model.parameters()).device

    def run(steps: int) -> float:
        output = model(input_ids=torch.tensor([list(prompt)], device=device), use_cache=True, logits_to_keep=1)
        cache, token = output.past_key_values, output.logits[:, -1:].argmax(dim=-1)
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(steps):
            output = model(input_ids=token, past_key_values=cache, use_cache=True)
            cache, token = output.past_key_values, output.logits[:, -1:].argmax(dim=-1)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - start) * 1000.0 / max(steps, 1)

    run(warmup)
    return sorted(run(new_tokens) for _ in range(repeats))[repeats // 2]
