"""A quantized tokenizer dir and back to a feature reader.

    <dir>/tokenizer_config.yaml   hubert_ckpt, layer, kmeans_file, method, setting, scope, the
                                  activation clip per layer (scale = clip / qmax), p per layer
    <dir>/.done                   written last: the dir is complete
The weights are not copied: their per-channel max scales are recomputed from the checkpoint at
load, deterministically. ``load_quantized_tokenizer`` returns a reader with the
``.extract(waveform)`` of speech.hubert.HubertFeatureReader, so the units come out as stage 2's."""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
import yaml

from sofa_speechlm.speech.hubert import HubertFeatureReader
from sofa_speechlm.speech.kmeans import KmeansQuantizer

from .apply import QuantPlan, apply_real, apply_simulated, parse_setting
from .layers import quantizable_layers

CONFIG_FILE, DONE_FILE = "tokenizer_config.yaml", ".done"


def save_quantized_tokenizer(path: str | Path, plan: QuantPlan, *, hubert_ckpt, layer: int, kmeans_file, method: str,
                             setting: str, scope: str, details: dict | None = None) -> Path:
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / DONE_FILE).unlink(missing_ok=True)
    config = {
        "hubert_ckpt": str(Path(hubert_ckpt).resolve()), "layer": int(layer),
        "kmeans_file": str(Path(kmeans_file).resolve()) if kmeans_file else None,
        "method": method, "setting": setting.upper(), "scope": scope,
        "weight_bits": plan.weight_bits, "act_bits": plan.act_bits,
        "clips": {name: float(clip) for name, clip in plan.clips.items()},
        "percentiles": {name: float(p) for name, p in plan.percentiles.items()},
        "selected": list((details or {}).get("selected", [])),
    }
    temporary = path / f"{CONFIG_FILE}.tmp"
    temporary.write_text(yaml.safe_dump(config, sort_keys=False))
    os.replace(temporary, path / CONFIG_FILE)
    (path / DONE_FILE).write_text("")
    return path


def read_tokenizer_config(path: str | Path) -> dict:
    path = Path(path)
    if not (path / DONE_FILE).is_file() or not (path / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"{path}: not a complete quantized tokenizer dir (no {DONE_FILE} or {CONFIG_FILE}; run quantize_tokenizer)")
    return yaml.safe_load((path / CONFIG_FILE).read_text())


class QuantizedTokenizer:
    """HuBERT features (and units) with the quantized model; ``execution`` 'real' or 'simulated'."""

    sample_rate = HubertFeatureReader.sample_rate

    def __init__(self, reader: HubertFeatureReader, config: dict, execution: str, kmeans: KmeansQuantizer | None):
        self.reader, self.config, self.execution, self.kmeans = reader, config, execution, kmeans
        self.dim = reader.dim

    def extract(self, waveform: np.ndarray) -> np.ndarray:
        return self.reader.extract(waveform)

    def units(self, waveform: np.ndarray) -> np.ndarray:
        if self.kmeans is None:
            raise ValueError("this quantized tokenizer has no kmeans_file; give one")
        return self.kmeans(self.extract(waveform))


def quantize_reader(reader: HubertFeatureReader, plan: QuantPlan, scope: str, execution: str = "auto", source="the model") -> str:
    """Puts ``plan`` into ``reader.model`` for good; returns the execution used: 'real' (W8A8
    linears through int8 kernels, the rest simulated) or 'simulated'."""
    if execution not in ("auto", "real", "simulated"):
        raise ValueError(f"execution {execution!r}: expected auto, real or simulated")
    layers = quantizable_layers(reader.model, scope, source)
    use_real = execution == "real" or (execution == "auto" and (plan.weight_bits, plan.act_bits) == (8, 8))
    if use_real:
        try:
            converted = apply_real(reader.model, layers, plan, reader.device)
        except ValueError as error:
            if execution == "real":
                raise
            logging.warning("%s; the quantized tokenizer runs simulated", error)
            converted, use_real = [], False
        rest = QuantPlan(plan.act_bits, {n: c for n, c in plan.clips.items() if n not in converted}, plan.weight_bits)
        apply_simulated({n: m for n, m in layers.items() if n not in converted}, rest)
    else:
        apply_simulated(layers, plan)
    return "real" if use_real else "simulated"


def load_quantized_tokenizer(path: str | Path, device: str = "cpu", execution: str = "auto", kmeans_file=None) -> QuantizedTokenizer:
    config = read_tokenizer_config(path)
    weight_bits, act_bits = parse_setting(config["setting"])
    reader = HubertFeatureReader(config["hubert_ckpt"], layer=config["layer"], device=device)
    plan = QuantPlan(act_bits, config["clips"], weight_bits, config.get("percentiles", {}))
    used = quantize_reader(reader, plan, config["scope"], execution, config["hubert_ckpt"])
    kmeans_file = kmeans_file or config.get("kmeans_file")
    kmeans = KmeansQuantizer.load(kmeans_file, device=device) if kmeans_file else None
    return QuantizedTokenizer(reader, config, used, kmeans)
