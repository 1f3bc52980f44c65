"""Registry of attention normalizers: each maps scaled scores to attention weights (eager form).

Every normalizer receives fp32 scores ``S`` ([..., Lq, Lk]) and a boolean ``allowed`` mask of
the same (broadcast) shape in which every row has at least one allowed key (rows without any
are handled by the caller), and returns weights that are exactly zero on forbidden keys.
These are the reference definitions the memory-efficient path (``flash.py``) is tested against.
"""
import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F


def masked_row_max(scores: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """Row max over allowed keys, keepdim; gradient flows to the first maximal key (torch.max)."""
    return scores.masked_fill(~allowed, float("-inf")).max(dim=-1, keepdim=True).values


def softmax1(scores: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    """exp(S_i) / (1 + sum_j exp(S_j)) over allowed keys, computed without overflow.

    With c = max(0, max_j S_j) (a constant for autograd: the value does not depend on it),
    the ratio is exp(S_i - c) / (exp(-c) + sum_j exp(S_j - c)), all exponents <= 0.
    """
    shift = masked_row_max(scores, allowed).detach().clamp_min(0.0)
    # Forbidden keys are set to -inf before exp: exp would overflow there and poison the backward.
    exps = torch.exp((scores - shift).masked_fill(~allowed, float("-inf")))
    return exps / (torch.exp(-shift) + exps.sum(dim=-1, keepdim=True))


def _softmax(scores, allowed):
    return torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1)


def _sofa(scores, allowed):
    # Exactly as written in the paper: max-shift first, then Softmax1 (the shift makes every
    # exponent <= 0, so softmax1's own stabilising shift is 0 here).
    return softmax1(scores - masked_row_max(scores, allowed), allowed)


def _softmax1(scores, allowed):
    return softmax1(scores, allowed)


def _sofa_l1(scores, allowed):
    # Table 5 ablation: S / ||S||_1 over the allowed keys, then Softmax1.
    return softmax1(F.normalize(scores.masked_fill(~allowed, 0.0), p=1.0, dim=-1), allowed)


def _sofa_meancenter(scores, allowed):
    # Table 5 ablation: S - mean(S) over the allowed keys, then Softmax1.
    zeroed = scores.masked_fill(~allowed, 0.0)
    mean = zeroed.sum(dim=-1, keepdim=True) / allowed.sum(dim=-1, keepdim=True)
    return softmax1(scores - mean, allowed)


def _clipped(scores, allowed, *, zeta, gamma, alpha, length):
    # Bondarenko et al. (2023): clip((zeta - gamma) * softmax(S) + gamma, 0, 1); their OPT runs
    # use zeta = 1 and gamma = -alpha / T with alpha = 12 and T their fixed block size. A fixed
    # `length` keeps gamma independent of padding and of KV caching; without one, T is the
    # number of keys of the call (apply_attention always fixes it for HF models).
    if gamma is None:
        gamma = -alpha / (length if length is not None else scores.shape[-1])
    stretched = (zeta - gamma) * _softmax(scores, allowed) + gamma
    return stretched.clamp(0.0, 1.0).masked_fill(~allowed, 0.0)


@dataclass(frozen=True)
class Normalizer:
    """A named normalizer: its eager weight function and the options it accepts (with defaults)."""

    name: str
    weights: Callable[..., torch.Tensor]
    defaults: dict
    description: str


_REGISTRY = {
    n.name: n
    for n in (
        Normalizer("softmax", _softmax, {}, "vanilla softmax"),
        Normalizer("sofa", _sofa, {}, "S - max(S), then Softmax1 (the SOFA paper)"),
        Normalizer("softmax1", _softmax1, {}, "exp(S)/(1+sum exp(S)), no shift"),
        Normalizer("sofa_l1", _sofa_l1, {}, "L1-normalised S, then Softmax1 (Table 5)"),
        Normalizer("sofa_meancenter", _sofa_meancenter, {}, "S - mean(S), then Softmax1 (Table 5)"),
        Normalizer(
            "clipped",
            _clipped,
            {"zeta": 1.0, "gamma": None, "alpha": 12.0, "length": None},
            "clipped softmax of Bondarenko et al. 2023; gamma=None means -alpha/T, T = length "
            "(None: the keys of the call)",
        ),
    )
}

NORMALIZERS = tuple(_REGISTRY)

# Normalizers with a memory-efficient implementation (softmax(S)V scaled by a per-row gate).
FLASH_NORMALIZERS = ("softmax", "sofa", "softmax1")


def get_normalizer(name: str) -> Normalizer:
    """Look a normalizer up by name; unknown names list the supported ones."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown attention normalizer {name!r}; supported: {', '.join(NORMALIZERS)}")
    return _REGISTRY[name]


def resolve_options(name: str, options: dict) -> dict:
    """The normalizer's options with defaults filled in; unknown option names are an error."""
    normalizer = get_normalizer(name)
    if not options and not normalizer.defaults:  # sofa, softmax, softmax1: once per attention call
        return {}
    unknown = sorted(set(options) - set(normalizer.defaults))
    if unknown:
        accepted = ", ".join(normalizer.defaults) or "none"
        raise ValueError(f"normalizer {name!r} does not accept option(s) {unknown}; accepted: {accepted}")
    resolved = {**normalizer.defaults, **options}
    for key, value in resolved.items():
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value)):
            raise ValueError(f"option {key!r} of normalizer {name!r} must be a finite number, got {value!r}")
    if resolved.get("length") is not None and resolved["length"] <= 0:
        raise ValueError(f"option 'length' of normalizer {name!r} must be positive (T of gamma = -alpha/T), got {resolved['length']!r}")
    return resolved


def attention_weights(name: str, scores: torch.Tensor, allowed: torch.Tensor, **options) -> torch.Tensor:
    """Weights of normalizer ``name`` for fp32 scores; rows without an allowed key give zeros."""
    normalizer = get_normalizer(name)
    options = resolve_options(name, options)
    allowed = allowed.expand_as(scores)
    has_key = allowed.any(dim=-1, keepdim=True)
    # A row with no allowed key is evaluated as if all keys were allowed (finite, no NaN in
    # forward or backward) and then zeroed, so it contributes nothing and gets no gradient.
    safe_allowed = allowed | ~has_key
    return normalizer.weights(scores, safe_allowed, **options) * has_key
