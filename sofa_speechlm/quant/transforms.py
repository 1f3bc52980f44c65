"""In-place use of the exact folds of ``learned_transforms`` (one implementation of each fold for
SmoothQuant and the learned methods), and the explicit pre-scale where no producer can absorb
a factor (post-LN).

Each fold changes parameters so that the model's full-precision function is unchanged
(checked by the tests with quantizers disabled): a factor taken out of the linears' input is
put into the producer of that input.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import nn

from .learned_transforms import fold_norm_pair
from .modules import QuantLinear

SCALE_FLOOR = 1e-5


@torch.no_grad()
def fold_in_place(modules: dict[str, nn.Module], fold: Callable, *args, **kwargs) -> None:
    """Apply a ``learned_transforms`` fold (pure, on ``"<module>.<param>" -> tensor``) to the
    direct parameters of ``modules`` (name -> module), writing the results back in place."""
    params = {f"{name}.{key}": value for name, module in modules.items()
              for key, value in module.named_parameters(recurse=False)}
    for key, value in fold(params, *args, **kwargs).items():
        name, attribute = key.rsplit(".", 1)
        getattr(modules[name], attribute).copy_(value)


@torch.no_grad()
def fold_norm_scale(norm: nn.Module, linears: Sequence[nn.Module], scale: torch.Tensor,
                    shift: Optional[torch.Tensor] = None) -> None:
    """y = norm(x) feeds ``linears``; make them see (y - shift) / scale instead, exactly."""
    names = [f"linear{i}" for i in range(len(linears))]
    modules = {"norm": norm, **dict(zip(names, linears))}
    scale = scale.to(norm.weight)
    fold_in_place(modules, fold_norm_pair, "norm", names, scale, shift.to(scale) if shift is not None else None)


@torch.no_grad()
def prescale_linears(linears: Sequence[QuantLinear], scale: torch.Tensor) -> None:
    """Where the input has no foldable producer (post-LN): x -> x / s explicitly, W -> W diag(s)."""
    for linear in linears:
        linear.set_input_scale(scale)
