"""Attention probabilities of a SpeechLM's last layer, averaged over heads (the SOFA paper's Figure 3).

The weights come from the attention function registered by sofa_speechlm.attention, which returns
eager weights when they are asked for; a model still on HF's own SDPA (a vanilla stage-4 LM) is
switched to that function with softmax, the same math. Under SOFA (Softmax1) a row sums to less
than 1: the missing mass is the attention "to nothing" that lets a head stay quiet.
"""

from __future__ import annotations

import numpy as np
import torch

from sofa_speechlm.attention import apply_attention

VANILLA = "softmax"


def ensure_eager_weights(model):
    """Route a model without a sofa_speechlm attention setting through the registered function (softmax)."""
    if getattr(model.config, "sofa_attention", None) is None:
        apply_attention(model, VANILLA)
    return model


def attention_normalizer(model) -> str:
    setting = getattr(model.config, "sofa_attention", None)
    return setting["normalizer"] if setting else VANILLA


@torch.no_grad()
def last_layer_attention(model, token_ids: list[int], device="cpu") -> np.ndarray:
    """[T, T] head-averaged attention probabilities of the last decoder layer for one sequence."""
    ensure_eager_weights(model)
    ids = torch.tensor([token_ids], dtype=torch.long, device=device)
    outputs = model(input_ids=ids, attention_mask=torch.ones_like(ids), output_attentions=True)
    attentions = outputs.attentions
    if not attentions or attentions[-1] is None:
        raise RuntimeError(f"{type(model).__name__} returned no attention weights with output_attentions=True")
    weights = attentions[-1][0].float().mean(dim=0)
    if not torch.isfinite(weights).all():
        raise ValueError("last-layer attention weights contain NaN/inf")
    return weights.cpu().numpy()
