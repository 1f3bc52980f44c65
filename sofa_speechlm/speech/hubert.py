"""HuBERT layer features, as fairseq's HubertFeatureReader computes them, on transformers' HubertModel.

Layer numbering follows fairseq's `output_layer`: layer L is the output of the L-th
transformer block. fairseq stops after block L and applies no final encoder LayerNorm when a
layer is requested (for `layer_norm_first` models that LayerNorm only follows the last
block); for post-norm models (base) the encoder LayerNorm precedes the blocks. In
transformers 5.x, `HubertModel(..., output_hidden_states=True).hidden_states[L]` is the same
tensor for both layouts (test_units_hubert.py checks it). Here the encoder is cut after block
L instead, which gives that tensor without computing the blocks above it.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from sofa_speechlm.speech.fairseq_checkpoint import CheckpointError, load_fairseq_hubert

FAIRSEQ_MAX_CHUNK = 1_600_000  # samples per forward, as fairseq's HubertFeatureReader
PREPROCESSOR_FILE = "preprocessor_config.json"  # HF feature-extractor settings (do_normalize)


class FeatureError(ValueError):
    """Audio from which no features can be computed (e.g. shorter than one frame)."""


def load_hubert(checkpoint: str | Path):
    """(HubertModel in fp32, normalize waveform?) from a fairseq .pt file or a HuggingFace model dir.

    A HuggingFace dir loads in fp32 whatever dtype it was saved in (the audio is fp32). Its
    waveform normalisation is the preprocessor config's `do_normalize`; without one, the
    fairseq convention applies: normalise exactly when the conv feature extractor uses layer
    norm (every published fairseq HuBERT: base neither, large and xlarge both).
    """
    path = Path(checkpoint)
    if path.is_file():
        return load_fairseq_hubert(path)
    if not path.is_dir():
        raise CheckpointError(f"{path}: HuBERT checkpoint not found (expected a fairseq .pt file or a HuggingFace model dir)")
    config_path = path / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{path}: no config.json: not a HuggingFace model dir")
    model_type = json.loads(config_path.read_text()).get("model_type")
    if model_type != "hubert":
        raise CheckpointError(f"{config_path}: model_type '{model_type}', expected 'hubert'")
    from transformers import HubertModel

    model = HubertModel.from_pretrained(path, dtype=torch.float32)
    return model.eval(), _hf_normalize(path, model.config)


def _hf_normalize(path: Path, config) -> bool:
    """The dir's preprocessor `do_normalize`, warning where it differs from the fairseq convention."""
    fairseq_style = config.feat_extract_norm == "layer"
    preprocessor_path = path / PREPROCESSOR_FILE
    if not preprocessor_path.is_file():
        return fairseq_style
    try:
        preprocessor = json.loads(preprocessor_path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{preprocessor_path}: not valid JSON ({error})") from None
    rate = preprocessor.get("sampling_rate", HubertFeatureReader.sample_rate)
    if rate != HubertFeatureReader.sample_rate:
        raise CheckpointError(f"{preprocessor_path}: sampling_rate {rate}, expected {HubertFeatureReader.sample_rate}")
    do_normalize = bool(preprocessor.get("do_normalize", fairseq_style))
    if do_normalize != fairseq_style:
        logging.warning(
            f"{preprocessor_path}: do_normalize {do_normalize} differs from the fairseq convention for "
            f"feat_extract_norm '{config.feat_extract_norm}' (normalize {fairseq_style}); following the "
            f"preprocessor config (a k-means model fitted on features of the other setting will not match)"
        )
    return do_normalize


def receptive_field(config) -> int:
    """Samples the conv feature extractor needs for one output frame (400 for HuBERT)."""
    field = 1
    for kernel, stride in zip(reversed(config.conv_kernel), reversed(config.conv_stride)):
        field = (field - 1) * stride + kernel
    return field


def truncate_to_layer(model, layer: int, source: str | Path = "the model") -> None:
    """Keeps blocks 1..layer so that the encoder output is fairseq's output_layer=layer."""
    num_layers = model.config.num_hidden_layers
    if not 1 <= layer <= num_layers:
        raise ValueError(f"--layer {layer} is outside {source}: it has {num_layers} transformer layers (valid: 1..{num_layers})")
    model.encoder.layers = model.encoder.layers[:layer]
    if model.config.do_stable_layer_norm:
        model.encoder.layer_norm = torch.nn.Identity()
    model.config.num_hidden_layers = layer


class HubertFeatureReader:
    """Features of one HuBERT layer for a 16 kHz waveform, [frames, hidden_size] float32 at 50 Hz."""

    sample_rate = 16000

    def __init__(self, checkpoint: str | Path, layer: int = 6, device: str = "cpu", max_chunk: int = FAIRSEQ_MAX_CHUNK):
        model, self.normalize = load_hubert(checkpoint)
        truncate_to_layer(model, layer, checkpoint)
        self.model = model.to(device)
        self.device = device
        self.max_chunk = max_chunk
        self.min_samples = receptive_field(model.config)
        if max_chunk < self.min_samples:
            raise ValueError(f"max_chunk {max_chunk} is shorter than one HuBERT frame ({self.min_samples} samples)")
        self.dim = model.config.hidden_size

    @torch.inference_mode()
    def extract(self, waveform: np.ndarray) -> np.ndarray:
        if len(waveform) < self.min_samples:
            raise FeatureError(f"{len(waveform)} samples, shorter than one HuBERT frame ({self.min_samples})")
        audio = torch.from_numpy(np.asarray(waveform, dtype=np.float32)).to(self.device)
        if self.normalize:
            audio = F.layer_norm(audio, audio.shape)
        audio = audio.view(1, -1)
        chunks = [
            self.model(audio[:, start : start + self.max_chunk]).last_hidden_state
            for start in range(0, audio.size(1), self.max_chunk)
            if audio.size(1) - start >= self.min_samples  # a tail shorter than a frame yields none
        ]
        return torch.cat(chunks, dim=1)[0].float().cpu().numpy()
