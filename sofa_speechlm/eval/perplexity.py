"""Perplexity and next-token accuracy of a causal LM on a task-formatted LM text set.

The counted targets are the training loss's (SofaSpeechLanguageModel, lm/espnet_model.py):
`<sos/eos> t1..tn` predicts `t1..tn <sos/eos>`, and with the VoxtLM loss only the targets after
the first generate token count. PPL = exp(sum NLL / counted targets), as ESPnet's
lm_calc_perplexity. Any HF-callable causal LM works (stage-4 models, stage-5 variants).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from espnet2.lm.abs_model import AbsLM

from sofa_speechlm.lm.espnet_model import SofaSpeechLanguageModel


class _HFCausalLM(AbsLM):
    """AbsLM view of an HF-callable causal LM (right padding needs no attention mask)."""

    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input: torch.Tensor, hidden: None):
        return self.model(input_ids=input, use_cache=False).logits, None


@dataclass
class PerplexityResult:
    ppl: float
    accuracy: float  # % of counted targets whose argmax is right
    nll: float  # summed over counted targets
    tokens: int  # counted targets
    sequences: int


@torch.inference_mode()
def perplexity(
    model: torch.nn.Module,
    token_ids: Sequence[Sequence[int]],
    token_list: Sequence[str],
    loss: str = "voxtlm",
    batch_size: int = 16,
) -> PerplexityResult:
    """PPL and accuracy over `token_ids` (one id list per LM text line, without <sos/eos>).

    Lines are sorted by length and right-padded per batch; the pad id 0 is never a counted target.
    """
    if not token_ids:
        raise ValueError("no sequences to score")
    empty = [i for i, ids in enumerate(token_ids) if len(ids) == 0]
    if empty:
        raise ValueError(f"{len(empty)} empty sequences (first at line {empty[0] + 1})")
    scorer = SofaSpeechLanguageModel(_HFCausalLM(model), len(token_list), list(token_list), loss=loss).eval()
    device = next(model.parameters()).device
    order = sorted(range(len(token_ids)), key=lambda i: len(token_ids[i]))
    nll_sum, correct, counted = 0.0, 0.0, 0
    for start in range(0, len(order), batch_size):
        batch = [token_ids[i] for i in order[start : start + batch_size]]
        lengths = torch.tensor([len(ids) for ids in batch])
        text = torch.zeros((len(batch), int(lengths.max())), dtype=torch.long)
        for row, ids in enumerate(batch):
            text[row, : len(ids)] = torch.tensor(ids)
        loss_value, stats, ntokens = scorer(text.to(device), lengths.to(device))
        ntokens = int(ntokens)
        if not math.isfinite(float(loss_value)):
            raise FloatingPointError(f"the NLL of a batch is {float(loss_value)} (NaN/inf logits in the model?)")
        nll_sum += float(loss_value) * ntokens
        correct += float(stats["acc"]) * ntokens
        counted += ntokens
    if counted == 0:
        raise ValueError("no counted targets (every line lacks tokens after its generate token)")
    return PerplexityResult(math.exp(nll_sum / counted), 100.0 * correct / counted, nll_sum, counted, len(token_ids))
