"""Drop-in normalizers for pretrained HuggingFace causal LMs (OPT, Qwen2, Llama) through
transformers' attention interface.

``apply_attention(model, normalizer, **options)`` records ``{"normalizer", "options"}`` under
``model.config.sofa_attention`` (saved in config.json) and switches the model to the attention
function registered here as ``ATTENTION_IMPLEMENTATION``; that function reads the setting from
the module's config at call time, so every pretrained weight is kept and nothing is copied.
``normalizer="gated"`` adds a per-head sigmoid gate to every attention module (vanilla softmax
inside). ``restore_attention(model, checkpoint_dir)`` re-applies a saved model's attention and
gate weights (``sofa_speechlm.lm.backbone.load_pretrained`` does it for every pretrained LM).
"""
import glob
import math
import os

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask
from transformers.utils import output_capturing

from .functional import attend, eager_attention
from .normalizers import NORMALIZERS, resolve_options

ATTENTION_IMPLEMENTATION = "sofa_speechlm"
CONFIG_KEY = "sofa_attention"
# Optional submodule of an attention module: called as quantizer(query, key, value) on the
# head-split states (after RoPE, before GQA repetition) -> the same three, fake-quantized
# (sofa_speechlm.quant.attention installs it for PTQ; the normalizer itself stays unquantized).
QKV_QUANTIZER = "qkv_quantizer"
GATED = "gated"
CLIPPED = "clipped"
GATE_DEFAULTS = {"gate_init": 0.99}

# model_type -> name of the attention's output projection (the gate acts just before it).
# Llama (SmolLM2) and Qwen2 pass scaling, grouped KV heads (num_key_value_groups) and an
# sdpa-style mask to the attention interface the same way; OPT has no grouped heads.
_ATTENTION_OUTPUT_PROJECTION = {"opt": "out_proj", "qwen2": "o_proj", "llama": "o_proj"}


def supported_model_types() -> tuple[str, ...]:
    """HuggingFace ``config.model_type`` values that ``apply_attention`` can switch."""
    return tuple(_ATTENTION_OUTPUT_PROJECTION)


def hf_normalizers() -> tuple[str, ...]:
    """Names ``apply_attention`` accepts: every attention normalizer plus the gated-attention variant."""
    return NORMALIZERS + (GATED,)


class AttentionGate(nn.Module):
    """Gated attention of Bondarenko et al. (2023): sigmoid(W x + b) per head and token, x being
    the attention input. W = 0 and sigmoid(b) = gate_init at the start, so a pretrained model's
    attention outputs are only scaled by gate_init (close to 1) until W is trained."""

    def __init__(self, hidden_size: int, num_heads: int, gate_init: float):
        super().__init__()
        self.proj = nn.Linear(hidden_size, num_heads)
        nn.init.zeros_(self.proj.weight)
        nn.init.constant_(self.proj.bias, math.log(gate_init / (1.0 - gate_init)))

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """[batch, length, hidden] -> gate [batch, length, heads]."""
        return torch.sigmoid(self.proj(hidden_states))


def _pass_gate(module, args, kwargs):
    hidden_states = args[0] if args else kwargs["hidden_states"]
    kwargs["sofa_attention_gate"] = module.sofa_gate(hidden_states)
    return args, kwargs


def _attentions_requested(kwargs) -> bool:
    # Qwen2 passes output_attentions down; OPT's weights are collected by transformers' output
    # recorder, whose active request set is the only place that says whether they are wanted.
    if kwargs.get("output_attentions"):
        return True
    recorder = getattr(output_capturing, "_active_collector", None)  # private in transformers 5.x
    collector = recorder.get() if recorder is not None else None
    return bool(collector) and "attentions" in collector


def sofa_attention_forward(module, query, key, value, attention_mask, scaling=None, dropout=0.0, **kwargs):
    """transformers attention-interface function: (out [B, L, H, D], weights or None)."""
    # Called per layer and decoding step: attribute look-ups that miss (nn.Module.__getattr__
    # raising inside getattr) cost as much as a small op, so submodules and plain attributes
    # are read from the module's dicts.
    setting = module.config.sofa_attention
    normalizer, options = setting["normalizer"], setting["options"]
    gate = kwargs.get("sofa_attention_gate")
    if normalizer == GATED:
        normalizer, options = "softmax", {}
    quantizer = module._modules.get(QKV_QUANTIZER)
    if quantizer is not None:
        query, key, value = quantizer(query, key, value)
    groups = vars(module).get("num_key_value_groups", 1)
    if groups > 1:
        key = key.repeat_interleave(groups, dim=1)
        value = value.repeat_interleave(groups, dim=1)
    # HF's sdpa-style mask is None exactly when plain causal masking (or none, for one query) applies.
    causal = attention_mask is None and getattr(module, "is_causal", True)
    arguments = dict(normalizer=normalizer, causal=causal, attn_mask=attention_mask, scale=scaling, **options)
    if _attentions_requested(kwargs):
        out, weights = eager_attention(query, key, value, dropout_p=dropout, **arguments)
    else:
        out, weights = attend(query, key, value, dropout_p=dropout, **arguments), None
    out = out.transpose(1, 2)
    if gate is not None:
        out = out * gate.unsqueeze(-1).to(out.dtype)
    return out.contiguous(), weights


AttentionInterface.register(ATTENTION_IMPLEMENTATION, sofa_attention_forward)
AttentionMaskInterface.register(ATTENTION_IMPLEMENTATION, sdpa_mask)


def _attention_modules(model):
    projection = _ATTENTION_OUTPUT_PROJECTION[model.config.model_type]
    return [m for m in model.modules() if hasattr(m, projection) and hasattr(m, "q_proj")]


def _remove_gates(model):
    for module in _attention_modules(model):
        if hasattr(module, "sofa_gate"):
            module._sofa_gate_hook.remove()
            del module.sofa_gate, module._sofa_gate_hook


def _install_gates(model, gate_init):
    config = model.config
    for module in _attention_modules(model):
        reference = module.q_proj.weight
        module.sofa_gate = AttentionGate(config.hidden_size, config.num_attention_heads, gate_init).to(
            device=reference.device, dtype=reference.dtype
        )
        module._sofa_gate_hook = module.register_forward_pre_hook(_pass_gate, with_kwargs=True)


def _check_model(model):
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in _ATTENTION_OUTPUT_PROJECTION:
        raise ValueError(
            f"apply_attention does not support model type {model_type!r}; supported: {', '.join(supported_model_types())}"
        )


def apply_attention(model, normalizer: str, **options):
    """Switch a HuggingFace causal LM's attention to ``normalizer`` in place (weights kept); returns it.

    ``normalizer`` is one of ``hf_normalizers()``; options are the normalizer's (e.g. clipped's
    zeta, gamma, alpha, length: its T defaults to ``config.max_position_embeddings``) or, for
    ``gated``, ``gate_init``. Calling it again replaces the setting.
    """
    _check_model(model)
    if normalizer == GATED:
        unknown = sorted(set(options) - set(GATE_DEFAULTS))
        if unknown:
            raise ValueError(f"normalizer 'gated' does not accept option(s) {unknown}; accepted: gate_init")
        options = {**GATE_DEFAULTS, **options}
        if not 0.0 < options["gate_init"] < 1.0:
            raise ValueError(f"gate_init must lie in (0, 1), got {options['gate_init']!r}")
    elif normalizer in NORMALIZERS:
        options = resolve_options(normalizer, options)
        if normalizer == CLIPPED and options["length"] is None:
            # Qualcomm's recipe fixes T to the block size; the model's maximum length is ours,
            # so gamma is the same in training, full and KV-cached decoding.
            options["length"] = model.config.max_position_embeddings
    else:
        raise ValueError(f"unknown attention normalizer {normalizer!r}; supported: {', '.join(hf_normalizers())}")
    _remove_gates(model)
    if normalizer == GATED:
        _install_gates(model, options["gate_init"])
    model.config.sofa_attention = {"normalizer": normalizer, "options": options}
    model.set_attn_implementation(ATTENTION_IMPLEMENTATION)
    return model


def restore_attention(model, checkpoint_dir: str | None = None):
    """Re-apply the attention recorded in ``model.config`` (after building a model from a saved
    config or loading it with transformers); a model without a record is returned unchanged.
    With ``checkpoint_dir`` (the saved model's dir) the weights of ``gated``'s gates are loaded
    from its safetensors files too: transformers reports them as unexpected keys and drops them."""
    setting = getattr(model.config, CONFIG_KEY, None)
    if setting is None:
        return model
    model = apply_attention(model, setting["normalizer"], **setting["options"])
    gate_keys = {name for name in model.state_dict() if ".sofa_gate." in name}
    if gate_keys and checkpoint_dir is not None:
        from safetensors import safe_open

        state = {}
        for file in sorted(glob.glob(os.path.join(checkpoint_dir, "*.safetensors"))):
            with safe_open(file, framework="pt") as tensors:
                state.update({name: tensors.get_tensor(name) for name in tensors.keys() if name in gate_keys})
        missing = sorted(gate_keys - set(state))
        if missing:
            raise ValueError(f"{checkpoint_dir}: gated-attention weights missing from the checkpoint, e.g. {missing[0]}")
        model.load_state_dict(state, strict=False)
    return model
