"""The HuggingFace causal LM under the SpeechLM: loading, random building, joint vocabulary.

Two sources are supported: a pretrained local directory, hub id or offline model name such
as `smollm2` (`pretrained`), or an inline HF config dict (`hf_config`) that builds a randomly
initialised model (the embedded default: no pretrained OPT is available offline).

Vocabulary adaptation: the joint speech-text BPE vocabulary shares no ids with the
pretrained text tokenizer, so every row of the input embedding is re-drawn, not copied.
Rows are sampled from a normal distribution with the per-dimension mean and standard
deviation of the pretrained embedding matrix, so that the first layer sees inputs on the
scale it was trained for. An untied output head is re-drawn the same way from its own
statistics; a tied head (OPT, Qwen2.5-0.5B, SmolLM2) shares the new embedding. The
pretrained tokenizer (e.g. SmolLM2's) is therefore never used by the SpeechLM.
"""

import logging
import os
from typing import List

import torch
from transformers import AutoConfig, AutoModelForCausalLM, PretrainedConfig, PreTrainedModel

from sofa_speechlm.attention import restore_attention, supported_model_types

# The architectures whose attention sofa_speechlm.attention can switch.
SUPPORTED_MODEL_TYPES = supported_model_types()


class BackboneError(ValueError):
    """A pretrained model or HF config that cannot become the SpeechLM backbone."""


def _check_model_type(config: PretrainedConfig, source: str) -> None:
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise BackboneError(
            f"{source}: model_type '{config.model_type}' is not supported; "
            f"expected one of {SUPPORTED_MODEL_TYPES}"
        )


def _is_hub_id(name: str) -> bool:
    parts = name.split("/")
    return len(parts) == 2 and all(parts) and not name.startswith((".", "/"))


def load_pretrained(pretrained: str) -> PreTrainedModel:
    """Load an OPT/Qwen2/Llama causal LM from a local directory, a hub id (offline cache) or
    the name of an offline model (sofa_speechlm.lm.offline_models, e.g. 'smollm2'), in fp32;
    a model saved after `apply_attention` comes back with its attention (and gate weights)."""
    from sofa_speechlm.lm.offline_models import OFFLINE_MODELS, resolve_pretrained

    pretrained = resolve_pretrained(pretrained)
    if not os.path.isdir(pretrained) and not _is_hub_id(pretrained):
        raise BackboneError(
            f"pretrained: '{pretrained}' is neither an existing directory, a hub id "
            f"of the form 'owner/name', nor a known offline model ({', '.join(OFFLINE_MODELS)})"
        )
    try:
        config = AutoConfig.from_pretrained(pretrained)
    except (OSError, ValueError) as exc:
        where = "directory" if os.path.isdir(pretrained) else "hub id (not a directory)"
        raise BackboneError(
            f"pretrained: cannot read a HuggingFace config from {where} '{pretrained}': {exc}"
        ) from exc
    _check_model_type(config, f"pretrained '{pretrained}'")
    logging.info(f"Loading pretrained {config.model_type} from {pretrained}")
    model = AutoModelForCausalLM.from_pretrained(
        pretrained, config=config, dtype=torch.float32, attn_implementation="sdpa"
    )
    if getattr(config, "sofa_attention", None) is None:
        return model
    from transformers.utils import cached_file

    checkpoint_dir = pretrained if os.path.isdir(pretrained) else os.path.dirname(cached_file(pretrained, "config.json"))
    return restore_attention(model, checkpoint_dir)


def build_random(hf_config: dict, init_seed: int) -> PreTrainedModel:
    """Build a randomly initialised causal LM from an inline HF config dict.

    The initialisation uses its own seed, so that rebuilding from config.yaml gives the same
    frozen base weights in the adapter modes (which save only adapter weights).
    """
    options = dict(hf_config)
    model_type = options.pop("model_type", None)
    if model_type is None:
        raise BackboneError("hf_config: the key 'model_type' is missing (e.g. 'opt')")
    try:
        config = AutoConfig.for_model(model_type, **options)
    except ValueError as exc:
        raise BackboneError(f"hf_config: {exc}") from exc
    _check_model_type(config, "hf_config")
    config._attn_implementation = "sdpa"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        return AutoModelForCausalLM.from_config(config, dtype=torch.float32)


def _redraw_like(weight: torch.Tensor, rows: int) -> torch.Tensor:
    """Rows drawn from N(mean, std) of `weight`'s columns."""
    mean, std = weight.mean(0), weight.std(0)
    return torch.randn(rows, weight.size(1), dtype=weight.dtype) * std + mean


def adapt_vocabulary(
    model: PreTrainedModel, vocab_size: int, pad_id: int, sos_eos_id: int
) -> List[torch.nn.Parameter]:
    """Give `model` a fresh embedding (and head) for the joint vocabulary, in place.

    Returns the re-drawn weights (they have no pretrained values to keep).
    """
    old_input = model.get_input_embeddings().weight.detach().clone()
    old_output = model.get_output_embeddings().weight.detach().clone()
    tied = model.get_output_embeddings().weight is model.get_input_embeddings().weight
    model.resize_token_embeddings(vocab_size, mean_resizing=False)
    embedding = model.get_input_embeddings()
    with torch.no_grad():
        embedding.weight.copy_(_redraw_like(old_input, vocab_size))
        if not tied:
            model.get_output_embeddings().weight.copy_(_redraw_like(old_output, vocab_size))
    embedding.padding_idx = pad_id
    model.config.vocab_size = vocab_size
    model.config.pad_token_id = pad_id
    model.config.bos_token_id = sos_eos_id
    model.config.eos_token_id = sos_eos_id
    redrawn = [embedding.weight]
    if not tied:
        redrawn.append(model.get_output_embeddings().weight)
    return redrawn
