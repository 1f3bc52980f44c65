"""Fine-tuning modes of the SpeechLM backbone: full, LoRA (PEFT) and QLoRA (int8 base).

QLoRA here follows the SOFA paper: the frozen base linears are int8 (bitsandbytes
Linear8bitLt, which also runs on CPU) rather than NF4. Which weights count as new and train
besides the adapters (the joint-vocabulary layers) is decided by SofaCausalLM.
"""

import contextlib
import logging
import warnings
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
# LLM.int8's outlier threshold (the paper's QLoRA base is "Int8 (Dettmers et al., 2022)", whose
# default, also transformers', is 6.0). 0.0 quantizes the outlier columns too (docs/qlora.md).
DEFAULT_QLORA_THRESHOLD = 6.0


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


@contextlib.contextmanager
def _quiet_peft_deprecation():
    """PEFT asks a k-bit model transformers' deprecated `is_gradient_checkpointing`."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing", category=FutureWarning)
        yield


def int8_base_config(threshold: float):
    """transformers' BitsAndBytesConfig of the frozen int8 base (LLM.int8, Dettmers et al. 2022)."""
    from transformers import BitsAndBytesConfig

    if not threshold >= 0.0:
        raise ValueError(f"lm_conf.qlora_threshold: expected a number >= 0 (0: no fp16 outlier columns), got {threshold}")
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_threshold=float(threshold))


def quantize_base_int8(model: PreTrainedModel, threshold: float = DEFAULT_QLORA_THRESHOLD) -> None:
    """Swap every frozen decoder linear for a bitsandbytes Linear8bitLt, in place.

    The swap is transformers' (`replace_with_bnb_linear`); the weights go in as transformers
    loads them, unquantized `Int8Params` that quantize on their first `.to(device)`: ESPnet's
    placement of the model on the training device (or the forward pass, if nothing moves it).
    Quantizing here, on the CPU where the model is built, made the later move to CUDA leave
    bitsandbytes' int8 state behind. `threshold` is LLM.int8's outlier threshold: input
    columns with a value above it stay in fp16 (0 quantizes every column).
    """
    import bitsandbytes as bnb
    from peft import prepare_model_for_kbit_training
    from transformers.integrations import replace_with_bnb_linear

    # bitsandbytes logs a float16-cast warning on every int8 matmul of a float32 input.
    logging.getLogger("bitsandbytes.autograd._functions").setLevel(logging.ERROR)
    frozen = {name: linear for name, linear in _decoder_linear_names(model).items() if not linear.weight.requires_grad}
    others = [name for name, module in model.named_modules() if type(module) is torch.nn.Linear and name not in frozen]
    replace_with_bnb_linear(model, modules_to_not_convert=others, quantization_config=int8_base_config(threshold))
    for name, linear in frozen.items():
        quantized = model.get_submodule(name)
        if not isinstance(quantized, bnb.nn.Linear8bitLt):
            raise RuntimeError(f"{name}: transformers did not swap it for an int8 linear")
        quantized.weight = bnb.nn.Int8Params(linear.weight.data.cpu(), requires_grad=False, has_fp16_weights=False)
        if linear.bias is not None:
            quantized.bias = torch.nn.Parameter(linear.bias.data, requires_grad=False)
    model.is_loaded_in_8bit = True  # as after transformers' 8-bit loading: PEFT then wraps them as int8 layers
    with _quiet_peft_deprecation():
        prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)


def int8_state_follows_weight(module: torch.nn.Module) -> None:
    """Point each Linear8bitLt's int8 statistics at its weight's device and storage, in place.

    bitsandbytes keeps the codes (CB) and row scales (SCB) of a quantized weight as plain
    attributes, which nn.Module.to does not move: after moving a quantized model they would
    stay behind on the old device. Call after every move (SofaCausalLM does).
    """
    import bitsandbytes as bnb

    for layer in module.modules():
        if not isinstance(layer, bnb.nn.Linear8bitLt) or layer.weight.dtype != torch.int8:
            continue
        weight, state = layer.weight, layer.state
        if getattr(weight, "CB", None) is not None:  # quantized, not yet run
            weight.CB, weight.SCB = weight.data, weight.SCB.to(weight.device)
        if state.CB is not None:  # run: the statistics live in the matmul state
            state.CB, state.SCB = weight.data, state.SCB.to(weight.device)


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
    with _quiet_peft_deprecation():
        return get_peft_model(model, config)
