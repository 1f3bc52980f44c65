"""Layer-by-layer training shared by OmniQuant and AffineQuant.

For decoder layer i: the target is the full-precision layer on full-precision inputs; the input
of the block being trained is the output of the already quantized layers 0..i-1; the loss is the
MSE between the two. Trainable: the layer's equivalent transform (``let.LayerTransform``: LET
scales/shifts, AffineQuant matrices) and its weights' learnable clipping (``lwc``), with AdamW
(no weight decay) at separate learning rates. Every step folds the transform into the layer's
original parameters and runs the layer with those tensors (``torch.func.functional_call``) and
its quantizers on, so gradients reach the transform through the fake quantizers; after the last
epoch the very same transform is folded into the layer for good and the weights are put on their
grid with the learned clipping. Everything runs in float32 in the model's device.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn
from torch.func import functional_call

from .architectures import decoder_layers
from .attention import QKVQuantizer
from .calibration import CalibrationError, ChannelStats, capture_layer_inputs, check_finite, statistics_hook
from .learned_transforms import band_mask
from .let import LayerTransform, layout_of
from .lwc import install_clipping
from .modules import QuantLinear

logger = logging.getLogger(__name__)


@dataclass
class BlockwiseOptions:
    """What the two methods choose differently (see methods/omniquant.py, methods/affinequant.py)."""

    epochs: int
    let: bool                 # learn an equivalent transform
    lwc: bool                 # learn weight clipping
    alpha: float              # LET init migration strength
    let_lr: float
    lwc_lr: float
    shift: bool               # per-channel shifts on norm pairs (and v->out where exact)
    affine_heads: bool = False        # AffineQuant: v->out matrices instead of diagonal scales
    affine_query_key: bool = False    # AffineQuant: q/k matrices (not with rotary embeddings)
    stability_factor: Optional[float] = None  # AffineQuant gradual mask off-diagonal value
    batch_size: Optional[int] = 1     # sequences per training step (None: the calibration batches as given)


def attention_sums_to_one(model) -> bool:
    """Whether every attention row of probabilities sums to 1 (plain softmax, no gate): only then
    does a shift of the values pass through attention unchanged, so v->out may carry a shift."""
    setting = getattr(model.config, "sofa_attention", None)
    return setting is None or setting.get("normalizer") == "softmax"


def _output(result):
    return result[0] if isinstance(result, tuple) else result


def _run(layer, hidden, kwargs, params=None):
    if params is None:
        return _output(layer(hidden, **kwargs))
    return _output(functional_call(layer, params, (hidden,), kwargs, strict=False))


def _rows(value, start: int, stop: int, batch: int):
    """Rows start:stop of a captured layer argument: tensors (or tuples of tensors, as Qwen2's
    position embeddings) of two or more dims whose first dim is the batch; others are shared."""
    if isinstance(value, tuple):
        return tuple(_rows(v, start, stop, batch) for v in value)
    if torch.is_tensor(value) and value.dim() >= 2 and value.shape[0] == batch:
        return value[start:stop]
    return value


def _split_inputs(captured, batch_size: Optional[int] = None):
    """(hidden states, layer kwargs) per training step: the captured calibration batches cut into
    micro-batches of ``batch_size`` sequences (None: as captured)."""
    hiddens, kwargs_list = [], []
    for args, kwargs in captured:
        kwargs = dict(kwargs)
        hidden = args[0] if args else kwargs.pop("hidden_states")
        kwargs.pop("past_key_values", None)
        kwargs["use_cache"] = False
        batch = hidden.shape[0]
        step = batch_size or batch
        for start in range(0, batch, step):
            stop = min(start + step, batch)
            hiddens.append(hidden[start:stop])
            kwargs_list.append({k: _rows(v, start, stop, batch) for k, v in kwargs.items()})
    return hiddens, kwargs_list


def _layer_quantizers(layer):
    linears = {name: m for name, m in layer.named_modules() if isinstance(m, QuantLinear)}
    qkv = [m for m in layer.modules() if isinstance(m, QKVQuantizer)]
    return linears, qkv


def _set_layer_quantizers(layer, enabled: bool):
    linears, qkv = _layer_quantizers(layer)
    for linear in linears.values():
        linear.set_quantizers(enabled)
    for quantizer in qkv:
        for part in (quantizer.query, quantizer.key, quantizer.value):
            part.enabled = enabled


@torch.no_grad()
def _targets_and_stats(layer, hiddens, kwargs_list, method, index):
    """Full-precision outputs of ``layer`` and the per-channel statistics of its linears' inputs."""
    linears, _ = _layer_quantizers(layer)
    stats: dict[str, ChannelStats] = {}
    handles = [m.register_forward_pre_hook(statistics_hook(stats, name, method, f"decoder layer {index}, the input of {name}"))
               for name, m in linears.items()]
    try:
        targets = [_run(layer, h, kw) for h, kw in zip(hiddens, kwargs_list)]
    finally:
        for handle in handles:
            handle.remove()
    for batch, target in enumerate(targets):
        check_finite(target, method, f"the full-precision output of decoder layer {index} (calibration batch {batch})")
    return targets, stats


def _mse(layer, hiddens, kwargs_list, targets, params=None) -> float:
    with torch.no_grad():
        losses = [torch.nn.functional.mse_loss(_run(layer, h, kw, params), t) for h, kw, t in zip(hiddens, kwargs_list, targets)]
    return float(torch.stack(losses).mean())


@torch.no_grad()
def _fold(layer, params: dict):
    """Write transformed parameters (and explicit input scales) into the layer."""
    for name, value in params.items():
        module_name, _, leaf = name.rpartition(".")
        module = layer.get_submodule(module_name) if module_name else layer
        if leaf in ("input_scale", "input_shift"):  # buffers that are None until set
            setattr(module, leaf, value.detach().clone())
        else:
            getattr(module, leaf).copy_(value)


def _fit(layer, current_params, optimizer, epochs: int, start_epoch, data, where: str) -> None:
    """``epochs`` passes of MSE training over (inputs, layer kwargs, targets), one step each."""
    inputs, kwargs_list, targets = data
    for epoch in range(epochs):
        start_epoch(epoch)
        total = 0.0
        for batch, (hidden, kwargs, target) in enumerate(zip(inputs, kwargs_list, targets)):
            with torch.enable_grad():
                loss = torch.nn.functional.mse_loss(_run(layer, hidden, kwargs, current_params()), target)
                if not torch.isfinite(loss):
                    raise CalibrationError(
                        f"{where}: non-finite block loss ({loss.item()}) in "
                        f"epoch {epoch}, calibration batch {batch}: the learned transform or clipping diverged "
                        f"(try a smaller let_lr/lwc_lr, or check the calibration data)")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
            total += loss.item()
        logger.info("%s epoch %d/%d block MSE %.4g", where, epoch + 1, epochs, total / len(targets))


def train_blockwise(model: nn.Module, config, calibration, options: BlockwiseOptions) -> list[dict]:
    """Train and fold every decoder layer in turn; returns per-layer records
    ``{"layer", "mse_init", "mse_final", "seconds"}`` (block MSE on the calibration data with the
    initial transform/clipping and after folding)."""
    method = config.method
    if options.affine_heads and options.epochs < 2:
        raise ValueError(f"{method}: the gradual mask needs epochs > 1 (its band grows over epochs), got epochs={options.epochs}")
    layout = layout_of(model)
    if options.affine_query_key and layout.rotary:
        logger.warning("%s: q/k matrices do not commute with rotary embeddings; using the q/k scale tied on rotary pairs",
                       method)
    affine_query_key = options.affine_query_key and not layout.rotary
    shift_heads = options.let and options.shift and attention_sums_to_one(model)
    hiddens, kwargs_list = _split_inputs(capture_layer_inputs(model, calibration, method), options.batch_size)
    quantized_inputs = [h.clone() for h in hiddens]
    records = []
    layers = decoder_layers(model, method)
    for index, layer in enumerate(layers):
        start = time.perf_counter()
        targets, stats = _targets_and_stats(layer, hiddens, kwargs_list, method, index)
        originals = {name: p.detach().clone() for name, p in layer.named_parameters()}
        frozen_flags = {name: p.requires_grad for name, p in layer.named_parameters()}
        for p in layer.parameters():
            p.requires_grad_(False)
        transform = None
        if options.let:
            v_proj, o_proj = layout.heads_pair
            heads_shift = shift_heads and f"{v_proj}.bias" in originals and f"{o_proj}.bias" in originals
            transform = LayerTransform(layout, originals, stats, alpha=options.alpha, shift=options.shift,
                                       shift_heads=heads_shift, affine_heads=options.affine_heads,
                                       affine_query_key=affine_query_key).to(next(layer.parameters()).device)
        linears, _ = _layer_quantizers(layer)
        clippers = [install_clipping(linear) for linear in linears.values()
                    if options.lwc and linear.weight_quantizer.bits < 16]
        _set_layer_quantizers(layer, True)

        def current_params():
            return transform(originals) if transform is not None else originals

        if transform is not None and options.affine_heads:
            transform.set_mask(band_mask(layout.head_dim, 0, options.epochs, options.stability_factor))
        mse_init = _mse(layer, quantized_inputs, kwargs_list, targets, current_params())
        groups = []
        if transform is not None:
            groups.append({"params": [p for p in transform.parameters() if p.requires_grad], "lr": options.let_lr})
        if clippers:
            groups.append({"params": [p for c in clippers for p in c.parameters()], "lr": options.lwc_lr})
        if groups and options.epochs > 0:
            def start_epoch(epoch):
                if transform is not None and options.affine_heads:
                    transform.set_mask(band_mask(layout.head_dim, epoch, options.epochs, options.stability_factor))

            _fit(layer, current_params, torch.optim.AdamW(groups, weight_decay=0.0), options.epochs, start_epoch,
                 (quantized_inputs, kwargs_list, targets), f"{method}: decoder layer {index} (of {len(layers)})")
        with torch.no_grad():
            final = current_params()
            for name, value in final.items():
                check_finite(value, method, f"decoder layer {index}, the transformed parameter {name}")
            _fold(layer, final)
        for linear in linears.values():
            linear.freeze()
            linear.weight_quantizer.clipper = None
        for name, p in layer.named_parameters():
            p.requires_grad_(frozen_flags.get(name, True))
        mse_final = _mse(layer, quantized_inputs, kwargs_list, targets)
        with torch.no_grad():
            quantized_inputs = [_run(layer, h, kw) for h, kw in zip(quantized_inputs, kwargs_list)]
        for batch, h in enumerate(quantized_inputs):
            check_finite(h, method, f"the quantized output of decoder layer {index} (calibration batch {batch})")
        hiddens = targets
        seconds = time.perf_counter() - start
        records.append({"layer": index, "mse_init": mse_init, "mse_final": mse_final, "seconds": seconds})
        logger.info("%s: decoder layer %d (of %d) block MSE %.4g -> %.4g (%.1f s)", method, index, len(layers),
                    mse_init, mse_final, seconds)
    return records
