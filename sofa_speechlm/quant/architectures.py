"""What PTQ needs to know about each model family, in one table (a new family is one entry).

Names are relative to a decoder layer. ``smoothing`` lists (norm, [linears fed by it]); the
norm is the module whose affine parameters absorb a smoothing factor. ``post_ln`` tells, from
the HF config, that the norms sit *after* the residual add (OPT-350m,
``do_layer_norm_before=False``): then a norm's output is not the linears' input and nothing can
be folded into it, so methods fall back to an explicit input pre-scale on the linears.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Optional

from torch import nn


@dataclass(frozen=True)
class Architecture:
    layers: str                                  # decoder layer list, relative to the causal LM
    attention: str                               # attention module inside a layer
    linears: tuple[str, ...]                     # every linear of a layer that PTQ quantizes
    smoothing: tuple[tuple[str, tuple[str, ...]], ...]  # (norm, linears sharing its output)
    value_output: tuple[str, str]                # (v projection, attention output projection)
    query_key: tuple[str, str]                   # (q projection, k projection)
    norm_has_bias: bool                          # LayerNorm (shift possible) vs RMSNorm
    rotary: bool                                 # q/k rotated after projection (RoPE)
    post_ln: Callable[[object], bool] = field(default=lambda config: False)

    def kv_groups(self, config) -> int:
        """Query heads per key/value head (1 without grouped-query attention)."""
        heads = config.num_attention_heads
        return heads // (getattr(config, "num_key_value_heads", None) or heads)

    def head_dim(self, config) -> int:
        return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


ARCHITECTURES: dict[str, Architecture] = {
    "opt": Architecture(
        layers="model.decoder.layers",
        attention="self_attn",
        linears=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "fc1", "fc2"),
        smoothing=(("self_attn_layer_norm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
                   ("final_layer_norm", ("fc1",))),
        value_output=("self_attn.v_proj", "self_attn.out_proj"),
        query_key=("self_attn.q_proj", "self_attn.k_proj"),
        norm_has_bias=True,
        rotary=False,
        post_ln=lambda config: not getattr(config, "do_layer_norm_before", True),
    ),
    "qwen2": Architecture(
        layers="model.layers",
        attention="self_attn",
        linears=("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                 "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"),
        smoothing=(("input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
                   ("post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj"))),
        value_output=("self_attn.v_proj", "self_attn.o_proj"),
        query_key=("self_attn.q_proj", "self_attn.k_proj"),
        norm_has_bias=False,
        rotary=True,
    ),
}

# Llama (SmolLM2) has Qwen2's layout: RMSNorm pairs input_layernorm -> q/k/v and
# post_attention_layernorm -> gate/up, o_proj/down_proj unsmoothed, grouped KV heads, RoPE.
ARCHITECTURES["llama"] = ARCHITECTURES["qwen2"]


class ArchitectureError(ValueError):
    """A model PTQ cannot handle (unknown family or missing modules)."""


def architecture(model: nn.Module, method: str = "ptq") -> Architecture:
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    if model_type not in ARCHITECTURES:
        raise ArchitectureError(
            f"{method}: model type {model_type!r} is not supported; supported: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[model_type]


def decoder_layers(model: nn.Module, method: str = "ptq") -> list[nn.Module]:
    arch = architecture(model, method)
    try:
        return list(model.get_submodule(arch.layers))
    except AttributeError as exc:
        raise ArchitectureError(f"{method}: {type(model).__name__} has no decoder layers at '{arch.layers}'") from exc


def layer_module(layer: nn.Module, name: str, method: str = "ptq", index: Optional[int] = None) -> nn.Module:
    """A named submodule of a decoder layer, with an error naming method, layer and module."""
    try:
        return layer.get_submodule(name)
    except AttributeError as exc:
        where = f"layer {index}" if index is not None else type(layer).__name__
        raise ArchitectureError(f"{method}: {where} lacks the module '{name}' the method needs") from exc


def is_post_ln(model: nn.Module) -> bool:
    return architecture(model).post_ln(model.config)
