"""Perplexity and next-token accuracy of a causal LM on a task-formatted LM text set.

The counted targets are the training loss's (SofaSpeechLanguageModel, lm/espnet_model.py):
`<sos/eos> t1..tn` predicts `t1..tn <sos/eos>`, and with the VoxtLM loss only the targets after
the first generate token count. PPL = exp(sum NLL / counted targets), as ESPnet's
lm_calc_perplexity. Any HF-callable causal LM works (stage-4 models, stage-5 variants).
Lines longer than the model's positions follow stage 4's rule (sofa_speechlm.text.length):
dropped by default, or cut, or refused.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
from espnet2.lm.abs_model import AbsLM

from sofa_speechlm.lm.espnet_model import SofaSpeechLanguageModel
from sofa_speechlm.text.length import DEFAULT_RULE, limit_token_ids, max_line_tokens


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
    sequences: int  # scored lines
    long_lines: int = 0  # lines over the model's positions (dropped or cut, as `long_lines` says)


@torch.inference_mode()
def perplexity(
    model: torch.nn.Module,
    token_ids: Sequence[Sequence[int]],
    token_list: Sequence[str],
    loss: str = "voxtlm",
    batch_size: int = 16,
    long_lines: str = DEFAULT_RULE,
    max_length: int | None = None,
    names: Sequence[str] | None = None,
) -> PerplexityResult:
    """PPL and accuracy over `token_ids` (one id list per LM text line, without <sos/eos>).

    Lines are sorted by length and right-padded per batch; the pad id 0 is never a counted target.
    A line longer than `max_length` tokens (default: the model's max_position_embeddings minus
    the <sos/eos>) is dropped, cut or refused (`long_lines`), named by `names` or line number.
    """
    if not token_ids:
        raise ValueError("no sequences to score")
    empty = [i for i, ids in enumerate(token_ids) if len(ids) == 0]
    if empty:
        raise ValueError(f"{len(empty)} empty sequences (first at line {empty[0] + 1})")
    if max_length is None:
        positions = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        max_length = max_line_tokens(positions) if positions else None
    long_count = 0
    if max_length is not None:
        kept, report = limit_token_ids(token_ids, max_length, long_lines, names)
        report.log("perplexity")
        token_ids = [token_ids[i][:max_length] for i in kept]
        long_count = len(report.long)
        if not token_ids:
            raise ValueError(f"every line is longer than {max_length} tokens")
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
    return PerplexityResult(math.exp(nll_sum / counted), 100.0 * correct / counted, nll_sum, counted, len(token_ids), long_count)
