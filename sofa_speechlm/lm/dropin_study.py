"""Drop-in study of a pretrained text LM: each attention normalizer swapped in without training.

For every normalizer the pretrained model (with its own tokenizer; no joint vocabulary, no
fine-tuning) scores the same sentences: text perplexity (exp of the mean per-token NLL) and,
from forward hooks, per-layer outlier statistics in the conventions of Bondarenko et al.:
per sequence the infinity norm and the (Pearson) kurtosis of the flattened output of each
decoder layer, its attention output projection and its MLP down projection, reported per
layer as the maximum infinity norm and the mean kurtosis over sequences.
"""

import logging
import math
from dataclasses import dataclass, field
from typing import Dict, List, Sequence

import torch
from tqdm import tqdm

from sofa_speechlm.attention import apply_attention

# model_type -> (attention output projection, MLP output projection) whose outputs are hooked.
OUTLIER_MODULES = {
    "opt": ("self_attn.out_proj", "fc2"),
    "qwen2": ("self_attn.o_proj", "mlp.down_proj"),
    "llama": ("self_attn.o_proj", "mlp.down_proj"),
}


@dataclass
class OutlierStats:
    """Per-sequence statistics of one hooked module's output."""

    inf_norms: List[float] = field(default_factory=list)
    kurtoses: List[float] = field(default_factory=list)

    def add(self, output: torch.Tensor, lengths: torch.Tensor) -> None:
        for row, length in zip(output.detach().float(), lengths.tolist()):
            values = row[:length].flatten().double()
            centred = values - values.mean()
            variance = centred.pow(2).mean()
            self.inf_norms.append(values.abs().max().item())
            self.kurtoses.append((centred.pow(4).mean() / variance.pow(2)).item() if variance > 0 else math.nan)

    def summary(self) -> Dict[str, float]:
        return {"max_inf_norm": max(self.inf_norms), "mean_kurtosis": sum(self.kurtoses) / len(self.kurtoses)}


def _hook_points(model) -> Dict[str, torch.nn.Module]:
    """'layer.<i>' (decoder layer output) plus the attention and MLP output projections."""
    model_type = model.config.model_type
    if model_type not in OUTLIER_MODULES:
        raise ValueError(f"outlier hooks: model type '{model_type}' is not supported; supported: {', '.join(OUTLIER_MODULES)}")
    layers = model.model.decoder.layers if model_type == "opt" else model.model.layers
    points = {}
    for index, layer in enumerate(layers):
        points[f"layer.{index}"] = layer
        for name in OUTLIER_MODULES[model_type]:
            points[f"layer.{index}.{name}"] = layer.get_submodule(name)
    return points


def tokenize(tokenizer, sentences: Sequence[str], prefix_token: str) -> List[torch.Tensor]:
    """Token ids of each sentence after `prefix_token` (its first token is never scored)."""
    prefix = tokenizer.convert_tokens_to_ids(prefix_token)
    if prefix is None or tokenizer.convert_ids_to_tokens(prefix) != prefix_token:
        raise ValueError(f"prefix token {prefix_token!r} is not in the tokenizer's vocabulary")
    return [torch.tensor([prefix] + tokenizer(s, add_special_tokens=False).input_ids) for s in sentences]


@torch.no_grad()
def evaluate(model, sequences: List[torch.Tensor], batch_size: int, device: str, desc: str) -> dict:
    """Perplexity and per-hook-point outlier statistics of `model` over `sequences`."""
    stats = {name: OutlierStats() for name in _hook_points(model)}
    current = {}

    def hook(name):
        def record(module, inputs, output):
            hidden = output[0] if isinstance(output, tuple) else output
            stats[name].add(hidden, current["lengths"])
        return record

    handles = [m.register_forward_hook(hook(name)) for name, m in _hook_points(model).items()]
    total_nll, total_tokens = 0.0, 0
    try:
        for start in tqdm(range(0, len(sequences), batch_size), desc=desc, unit="batch", mininterval=10):
            batch = sequences[start : start + batch_size]
            lengths = torch.tensor([len(s) for s in batch])
            ids = torch.nn.utils.rnn.pad_sequence(batch, batch_first=True).to(device)
            mask = (torch.arange(ids.size(1))[None] < lengths[:, None]).to(device)
            current["lengths"] = lengths
            logits = model(input_ids=ids, attention_mask=mask.long()).logits.float()
            nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
            scored = mask[:, 1:]
            total_nll += nll[scored].sum().item()
            total_tokens += int(scored.sum())
    finally:
        for handle in handles:
            handle.remove()
    mean_nll = total_nll / total_tokens
    if not math.isfinite(mean_nll):
        raise FloatingPointError(f"{desc}: the mean NLL is {mean_nll}")
    return {"perplexity": math.exp(mean_nll), "tokens": total_tokens, "outliers": {k: v.summary() for k, v in stats.items()}}


def run_study(model, sequences: List[torch.Tensor], normalizers: Sequence[str], batch_size: int, device: str) -> dict:
    """{normalizer: evaluate(...)}; the model's weights are never changed."""
    results = {}
    for normalizer in normalizers:
        apply_attention(model, normalizer)
        results[normalizer] = evaluate(model, sequences, batch_size, device, desc=normalizer)
        logging.info(f"{normalizer}: perplexity {results[normalizer]['perplexity']:.2f}")
    return results
