"""Settings (bit-widths), per-method configs with the papers' defaults, and the method registry.

A setting ``W<w>A<a>`` names the weight and activation bits (16 = not quantized). Adding a
method touches one place: define its config dataclass and decorate its quantize function with
``@register_method(name, ConfigClass)``; ``make_config`` and ``quantize`` then know it.
"""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from typing import Callable, Optional

# setting -> (weight bits, activation bits).
SETTINGS: dict[str, tuple[int, int]] = {
    "W8A8": (8, 8),
    "W4A4": (4, 4),
    "W4A16": (4, 16),
    "W8A16": (8, 16),
    "W6A6": (6, 6),
}
# Defaults that depend on the setting (a method's config may override them): weight-only
# settings use asymmetric min/max weights (OmniQuant/AWQ/GPTQ weight-only convention, and the
# layout of torchao's int4 kernel), W4A16 in groups of 128.
SETTING_DEFAULTS = {"W4A16": {"group_size": 128, "w_symmetric": False}, "W8A16": {"w_symmetric": False}}


class QuantConfigError(ValueError):
    """An unknown method, setting or hyperparameter."""


def parse_setting(setting: str) -> str:
    name = str(setting).upper()
    if name not in SETTINGS:
        raise QuantConfigError(f"unsupported setting {setting!r}; supported: {', '.join(SETTINGS)}")
    return name


@dataclass
class QuantConfig:
    """What every method shares. ``group_size`` None = per output channel; ``qkv`` quantizes the
    attention matmul inputs at the activation bit-width (off automatically for A16)."""

    method: str = ""
    setting: str = "W8A8"
    w_bits: int = 8
    a_bits: int = 8
    w_symmetric: bool = True
    a_symmetric: bool = True
    group_size: Optional[int] = None
    qkv: bool = True

    needs_calibration = False  # class attribute: whether ``quantize`` requires calibration batches

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hyperparameters(self) -> dict:
        """Everything but method and setting (what quant_config.yaml records as hyperparameters)."""
        return {k: v for k, v in self.to_dict().items() if k not in ("method", "setting")}

    def validate(self) -> None:
        if self.group_size is not None and self.group_size <= 0:
            raise QuantConfigError(f"{self.method}: group_size must be positive or null, got {self.group_size}")


@dataclass
class MethodEntry:
    config_class: type
    quantize: Callable
    description: str


METHODS: dict[str, MethodEntry] = {}


def register_method(name: str, config_class: type, description: str = ""):
    """Decorator registering ``fn(model, config, calibration) -> model`` as method ``name``.

    ``fn`` receives the model with every decoder linear already a ``QuantLinear`` and the q/k/v
    quantizers installed, all quantizers *disabled*; it applies its transforms (and may switch
    quantizers on while it trains). ``quantize`` switches everything on and freezes afterwards."""

    def decorate(fn):
        METHODS[name] = MethodEntry(config_class, fn, description or (fn.__doc__ or "").strip().split("\n")[0])
        return fn

    return decorate


def _ensure_methods_loaded() -> None:
    from . import methods  # noqa: F401  (registers the built-in methods)


def method_names() -> tuple[str, ...]:
    _ensure_methods_loaded()
    return tuple(METHODS)


def get_method(name: str) -> MethodEntry:
    _ensure_methods_loaded()
    key = str(name).lower()
    if key not in METHODS:
        raise QuantConfigError(f"unsupported PTQ method {name!r}; supported: {', '.join(METHODS)}")
    return METHODS[key]


def make_config(method: str, setting: str, **hyperparameters) -> QuantConfig:
    """A method's config at ``setting`` with the paper's defaults, overridden by ``hyperparameters``."""
    entry = get_method(method)
    setting = parse_setting(setting)
    w_bits, a_bits = SETTINGS[setting]
    names = {f.name for f in dataclasses.fields(entry.config_class)} - {"method", "setting", "w_bits", "a_bits"}
    unknown = sorted(set(hyperparameters) - names)
    if unknown:
        raise QuantConfigError(f"{method}: unknown hyperparameter(s) {unknown}; accepted: {sorted(names)}")
    values = {**SETTING_DEFAULTS.get(setting, {}), **hyperparameters}
    config = entry.config_class(method=str(method).lower(), setting=setting, w_bits=w_bits, a_bits=a_bits, **values)
    config.validate()
    return config


def config_from_dict(data: dict) -> QuantConfig:
    """Rebuild a config from ``to_dict()`` output (quant_config.yaml)."""
    entry = get_method(data["method"])
    known = {f.name for f in dataclasses.fields(entry.config_class)}
    return entry.config_class(**{k: v for k, v in data.items() if k in known})


def variant_name(config: QuantConfig, preset: Optional[str] = None) -> str:
    """Stage-5 dir name: ``<method or preset>_<setting>`` lowercased (e.g. rtn_w4a16, smoothquant_clip1_w8a8)."""
    parts = [preset or config.method, config.setting]
    return re.sub(r"[^a-z0-9_]+", "_", "_".join(parts).lower())
