"""Which modules of a transformers HubertModel are quantized, per scope.

A "layer" is one weight-carrying module whose input activation gets one static scale:
- transformer: every encoder block's q/k/v/out projections and its two feed-forward linears;
- all: those plus the CNN feature extractor's convolutions and the feature projection (the
  paper's Table I contrast: the CNN front end has far wider activation ranges).
The convolutional positional embedding (weight-normed) stays in full precision in both scopes.
Names are the model's own module names, in forward order (CNN first)."""
from __future__ import annotations

from torch import nn

SCOPES = ("transformer", "all")
BLOCK_LINEARS = ("attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.out_proj",
                 "feed_forward.intermediate_dense", "feed_forward.output_dense")


class LayerError(ValueError):
    """A model without the modules a scope quantizes."""


def _require(modules: dict, name: str, kind: type, source: str) -> nn.Module:
    module = modules.get(name)
    if not isinstance(module, kind):
        found = type(module).__name__ if module is not None else "nothing"
        raise LayerError(f"{source}: expected a {kind.__name__} at '{name}' (a transformers HubertModel), found {found}")
    return module


def quantizable_layers(model: nn.Module, scope: str = "all", source: str = "the model") -> dict[str, nn.Module]:
    """name -> module of the layers quantized in ``scope``, in forward order."""
    if scope not in SCOPES:
        raise LayerError(f"--scope {scope!r}: expected one of {', '.join(SCOPES)}")
    modules = dict(model.named_modules())
    layers: dict[str, nn.Module] = {}
    if scope == "all":
        convs = sorted((name for name in modules if name.startswith("feature_extractor.conv_layers.") and name.endswith(".conv")),
                       key=lambda name: int(name.split(".")[2]))
        if not convs:
            raise LayerError(f"{source}: no feature_extractor.conv_layers.N.conv modules (a transformers HubertModel was expected)")
        layers.update({name: _require(modules, name, nn.Conv1d, source) for name in convs})
        layers["feature_projection.projection"] = _require(modules, "feature_projection.projection", nn.Linear, source)
    blocks = getattr(getattr(model, "encoder", None), "layers", None)
    if not blocks:
        raise LayerError(f"{source}: no encoder.layers (transformer blocks) to quantize")
    for index in range(len(blocks)):
        for suffix in BLOCK_LINEARS:
            name = f"encoder.layers.{index}.{suffix}"
            layers[name] = _require(modules, name, nn.Linear, source)
    return layers


def is_cnn(name: str) -> bool:
    return name.startswith("feature_extractor.")
