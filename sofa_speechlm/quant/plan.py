"""Which variants a stage-5 run produces, from the CLI's methods/settings and a PTQ config YAML.

conf/ptq/*.yaml layout (every key optional):

    calibration: {nsamples: 16, seqlen: 128, batch_size: 16, seed: 0, tasks: [textlm, ...]}
    extra_settings: {rtn: [W4A16]}          # settings a method runs at besides --settings
    presets:                                # named variants: --methods may list them
      smoothquant_clip1: {method: smoothquant, clip: 0.01}
    methods:                                # per-method hyperparameters (make_config keywords)
      smoothquant: {alpha: 0.5}

A name in --methods is a registered method or a preset; the variant dir is
``<method or preset>_<setting>`` lowercased.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import yaml

from .config import QuantConfig, QuantConfigError, get_method, make_config, parse_setting, variant_name

KNOWN_SECTIONS = ("calibration", "extra_settings", "presets", "methods")


@dataclass
class Variant:
    name: str
    config: QuantConfig
    preset: Optional[str] = None


def read_ptq_config(path) -> dict:
    if path is None:
        return {}
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--ptq_config: {path} not found")
    with open(path) as f:
        data = yaml.safe_load(f) or {}
    if not isinstance(data, dict):
        raise QuantConfigError(f"{path}: expected a mapping with sections {', '.join(KNOWN_SECTIONS)}")
    unknown = sorted(set(data) - set(KNOWN_SECTIONS))
    if unknown:
        raise QuantConfigError(f"{path}: unknown section(s) {unknown}; expected {', '.join(KNOWN_SECTIONS)}")
    return data


def plan_variants(names: Sequence[str], settings: Sequence[str], ptq_config: dict) -> list[Variant]:
    """Every (method or preset) x setting, plus extra settings, with their configs (validated now,
    so a typo fails before any work)."""
    presets = ptq_config.get("presets") or {}
    method_hp = ptq_config.get("methods") or {}
    extra = {k.lower(): v for k, v in (ptq_config.get("extra_settings") or {}).items()}
    settings = [parse_setting(s) for s in settings]
    variants: list[Variant] = []
    for name in names:
        key = name.lower()
        preset_name = key if key in presets else None
        if preset_name:
            preset = dict(presets[key])
            method = preset.pop("method", None)
            if method is None:
                raise QuantConfigError(f"preset {key}: the key 'method' is missing")
            hyper = {**(method_hp.get(method) or {}), **preset}
        else:
            get_method(key)  # raises for an unknown method, listing the supported ones
            method, hyper = key, dict(method_hp.get(key) or {})
        for setting in settings + [parse_setting(s) for s in extra.get(key, []) if parse_setting(s) not in settings]:
            config = make_config(method, setting, **hyper)
            variants.append(Variant(variant_name(config, preset_name), config, preset_name))
    names_seen = [v.name for v in variants]
    duplicates = sorted({n for n in names_seen if names_seen.count(n) > 1})
    if duplicates:
        raise QuantConfigError(f"variants requested twice: {duplicates}")
    return variants
