"""Fine-tuning modes of the SpeechLM backbone: full, LoRA (PEFT) and QLoRA (int8 base).

QLoRA here follows the SOFA paper: the frozen base linears are int8 (bitsandbytes
Linear8bitLt, which also runs on CPU) rather than NF4. Which weights count as new and train
besides the adapters (the joint-vocabulary layers) is decided by SofaCausalLM.
"""

import logging
from typing import Dict, List, Optional, Sequence

import torch
from transformers import PreTrainedModel

FINETUNE_MODES = ("full", "lora", "qlora")

# The paper's targets: attention q/k/v/out projections and the MLP.
DEFAULT_LORA_TARGETS: Dict[str, List[str]] = {
    "opt": ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"],
    "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    "llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
}
# The paper's LoRA hyperparameters.
DEFAULT_LORA_CONF = dict(rank=256, alpha=256, dropout=0.05, target_modules=None)


def _decoder_linear_names(model: PreTrainedModel) -> Dict[str, torch.nn.Linear]:
    """Linears inside the transformer blocks (not the embedding or output head)."""
    head = model.get_output_embeddings()
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and module is not head and ".layers." in name
    }


def resolve_lora_targets(model: PreTrainedModel, targets: Optional[Sequence[str]]) -> List[str]:
    """The LoRA target suffixes for `model`, each checked to name a decoder linear."""
    if targets is None:
        targets = DEFAULT_LORA_TARGETS[model.config.model_type]
    available = sorted({name.rsplit(".", 1)[-1] for name in _decoder_linear_names(model)})
    missing = [t for t in targets if t not in available]
    if missing:
        raise ValueError(
            f"lora_conf.target_modules: {missing} name no linear layer of this "
            f"{model.config.model_type} model; available: {available}"
        )
    return list(targets)


def quantize_base_int8(model: PreTrainedModel) -> None:
    """Replace every frozen decoder linear by a bitsandbytes int8 Linear8bitLt, in place."""
    import bitsandbytes as bnb

    # bitsandbytes logs a float16-cast warning on every int8 matmul of a float32 input.
    logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
    for name, linear in _decoder_linear_names(model).items():
        if linear.weight.requires_grad:
            continue
        parent_name, child = name.rsplit(".", 1)
        quantized = bnb.nn.Linear8bitLt(
            linear.in_features,
            linear.out_features,
            bias=linear.bias is not None,
            has_fp16_weights=False,
            threshold=6.0,
        )
        quantized.weight = bnb.nn.Int8Params(
            linear.weight.data.clone(), requires_grad=False, has_fp16_weights=False
        )
        if linear.bias is not None:
            quantized.bias = torch.nn.Parameter(linear.bias.data.clone(), requires_grad=False)
        # Int8Params quantizes when moved to a device.
        setattr(model.get_submodule(parent_name), child, quantized.to(linear.weight.device))


def add_lora(
    model: PreTrainedModel,
    rank: int,
    alpha: float,
    dropout: float,
    target_modules: Optional[Sequence[str]],
) -> torch.nn.Module:
    """Wrap `model` with PEFT LoRA adapters (PEFT freezes everything else)."""
    from peft import LoraConfig, get_peft_model

    targets = resolve_lora_targets(model, target_modules)
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)
