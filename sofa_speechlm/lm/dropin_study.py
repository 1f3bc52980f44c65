"""Drop-in study of a pretrained text LM: each attention normalizer swapped in without training.

For every normalizer the pretrained model (with its own tokenizer; no joint vocabulary, no
fine-tuning) scores the same sentences: text perplexity (exp of the mean per-token NLL) and
the outlier statistics of sofa_speechlm.eval.outliers (Bondarenko et al.'s conventions: per
sequence the infinity norm and kurtosis of each decoder layer's output, attention and FFN
output projections and norms; per layer the max over modules of the mean infinity norm and
the mean kurtosis), over every position of the text.
"""

import logging
import math
from typing import List, Sequence

import torch
from tqdm import tqdm

from sofa_speechlm.attention import apply_attention
from sofa_speechlm.eval.outliers import OutlierCollector


def tokenize(tokenizer, sentences: Sequence[str], prefix_token: str) -> List[torch.Tensor]:
    """Token ids of each sentence after `prefix_token` (its first token is never scored)."""
    prefix = tokenizer.convert_tokens_to_ids(prefix_token)
    if prefix is None or tokenizer.convert_ids_to_tokens(prefix) != prefix_token:
        raise ValueError(f"prefix token {prefix_token!r} is not in the tokenizer's vocabulary")
    return [torch.tensor([prefix] + tokenizer(s, add_special_tokens=False).input_ids) for s in sentences]


@torch.no_grad()
def evaluate(model, sequences: List[torch.Tensor], batch_size: int, device: str, desc: str) -> dict:
    """Perplexity and outlier statistics (eval.outliers' summary, modality "text") over `sequences`."""
    total_nll, total_tokens = 0.0, 0
    with OutlierCollector(model) as collector:
        collector.modality = "text"
        for start in tqdm(range(0, len(sequences), batch_size), desc=desc, unit="batch", mininterval=10):
            batch = sequences[start : start + batch_size]
            lengths = torch.tensor([len(s) for s in batch])
            ids = torch.nn.utils.rnn.pad_sequence(batch, batch_first=True).to(device)
            mask = (torch.arange(ids.size(1))[None] < lengths[:, None]).to(device)
            collector.mask = mask
            logits = model(input_ids=ids, attention_mask=mask.long()).logits.float()
            nll = torch.nn.functional.cross_entropy(logits[:, :-1].transpose(1, 2), ids[:, 1:], reduction="none")
            scored = mask[:, 1:]
            total_nll += nll[scored].sum().item()
            total_tokens += int(scored.sum())
    mean_nll = total_nll / total_tokens
    if not math.isfinite(mean_nll):
        raise FloatingPointError(f"{desc}: the mean NLL is {mean_nll}")
    outliers = collector.summary()
    return {
        "perplexity": math.exp(mean_nll), "tokens": total_tokens,
        "outliers": {"summary": outliers["summary"]["text"], "per_layer": outliers["per_layer"]["text"]},
    }


def run_study(model, sequences: List[torch.Tensor], normalizers: Sequence[str], batch_size: int, device: str) -> dict:
    """{normalizer: evaluate(...)}; the model's weights are never changed."""
    results = {}
    for normalizer in normalizers:
        apply_attention(model, normalizer)
        results[normalizer] = evaluate(model, sequences, batch_size, device, desc=normalizer)
        logging.info(f"{normalizer}: perplexity {results[normalizer]['perplexity']:.2f}")
    return results


def calibration_windows(sequences: List[torch.Tensor], length: int, count: int) -> List[torch.Tensor]:
    """Up to `count` [1, length] windows of the concatenated sentences (no padding to skew statistics)."""
    stream = torch.cat(sequences)
    windows = min(count, len(stream) // length)
    if windows == 0:
        raise ValueError(f"calibration text has {len(stream)} tokens, fewer than one window of {length}")
    return [stream[i * length : (i + 1) * length][None] for i in range(windows)]


def run_ptq(load_model, sequences, calibration, normalizers, variants, batch_size: int, device: str) -> dict:
    """{normalizer: {"<method>_<setting>": perplexity}} of a fresh pretrained model per variant,
    switched to `normalizer` and quantized with sofa_speechlm.quant (simulated execution)."""
    from sofa_speechlm.quant import make_config, quantize

    results = {}
    for normalizer in normalizers:
        for method, setting in variants:
            name = f"{method}_{setting}".lower()
            model = apply_attention(load_model(), normalizer)
            quantize(model, make_config(method, setting), calibration)
            model.to(device)
            perplexity = evaluate(model, sequences, batch_size, device, desc=f"{normalizer} {name}")["perplexity"]
            results.setdefault(normalizer, {})[name] = perplexity
            logging.info(f"{normalizer} {name}: perplexity {perplexity:.2f}")
    return results
