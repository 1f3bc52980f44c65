"""Vocoder configuration: the published CodeHiFiGAN config.json keys plus our training keys.

One flat mapping, as in speech-resynthesis / fairseq's config.json, so a released config.json
describes a generator here unchanged and our YAML configs read like theirs.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import yaml


class VocoderConfigError(ValueError):
    """A vocoder config with an unknown key, a bad value, or one that contradicts a checkpoint."""


@dataclasses.dataclass
class VocoderConfig:
    kind: str = "unit_hifigan"  # the vocoder kind (bin.train_vocoder dispatches on it; unit2mel.py has the other)
    # Generator (published config.json keys; defaults: the SOFA paper's vocoder, appendix D.3)
    resblock: str = "1"
    upsample_rates: list[int] = dataclasses.field(default_factory=lambda: [5, 4, 4, 2, 2])
    upsample_kernel_sizes: list[int] = dataclasses.field(default_factory=lambda: [11, 8, 8, 4, 4])
    upsample_initial_channel: int = 512
    resblock_kernel_sizes: list[int] = dataclasses.field(default_factory=lambda: [3, 7, 11])
    resblock_dilation_sizes: list[list[int]] = dataclasses.field(default_factory=lambda: [[1, 3, 5], [1, 3, 5], [1, 3, 5]])
    num_embeddings: int = 200
    embedding_dim: int = 128
    model_in_dim: int | None = None  # embedding_dim, doubled with a speaker embedding
    multispkr: bool = False
    num_speakers: int = 200
    dur_predictor_params: dict[str, Any] | None = None  # encoder_embed_dim, var_pred_hidden_dim, var_pred_kernel_size, var_pred_dropout
    code_hop_size: int = 320
    sampling_rate: int = 16000
    # Training (HiFi-GAN / speech-resynthesis names)
    segment_size: int = 8960
    batch_size: int = 64
    learning_rate: float = 0.0008
    adam_b1: float = 0.8
    adam_b2: float = 0.99
    lr_decay: float = 0.999
    num_mels: int = 80
    n_fft: int = 1024
    hop_size: int = 256
    win_size: int = 1024
    fmin: float = 0.0
    fmax_for_loss: float | None = None
    discriminator_scale: float = 1.0  # channel width of MPD/MSD relative to HiFi-GAN's
    # Duration loss weight; unset: 1.0. speech-resynthesis builds its duration predictor only when
    # this is set and non-zero, fairseq whenever dur_predictor_params is: 0 builds none, and when
    # unset a published checkpoint decides (checkpoint.load_generator).
    dur_prediction_weight: float | None = None
    max_steps: int = 500000
    log_interval: int = 100
    summary_interval: int = 5000
    checkpoint_interval: int = 5000
    num_workers: int = 0
    seed: int = 1234
    speakers: list[str] | None = None  # speaker names in embedding order (multispkr training)

    def __post_init__(self):
        self.resblock = str(self.resblock)
        if self.model_in_dim is None:
            self.model_in_dim = self.embedding_dim * (2 if self.multispkr else 1)
        self.validate()

    @property
    def has_duration_predictor(self) -> bool:
        return bool(self.dur_predictor_params) and self.dur_prediction_weight != 0

    @property
    def duration_loss_weight(self) -> float:
        return 1.0 if self.dur_prediction_weight is None else float(self.dur_prediction_weight)

    @property
    def hop_length(self) -> int:
        """Samples per unit: the product of the upsample rates."""
        hop = 1
        for rate in self.upsample_rates:
            hop *= rate
        return hop

    def validate(self) -> None:
        if self.kind != "unit_hifigan":
            raise VocoderConfigError(f"kind: expected 'unit_hifigan' for a unit HiFi-GAN config, got '{self.kind}'")
        if self.resblock not in ("1", "2"):
            raise VocoderConfigError(f"resblock: expected '1' or '2', got '{self.resblock}'")
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            raise VocoderConfigError(
                f"upsample_rates {self.upsample_rates} and upsample_kernel_sizes {self.upsample_kernel_sizes} differ in length"
            )
        for rate, kernel in zip(self.upsample_rates, self.upsample_kernel_sizes):
            if kernel < rate or (kernel - rate) % 2:
                raise VocoderConfigError(f"upsample kernel {kernel} must be >= rate {rate} with an even difference")
        stages = 2 ** len(self.upsample_rates)
        if self.upsample_initial_channel % stages:
            raise VocoderConfigError(
                f"upsample_initial_channel {self.upsample_initial_channel} must be a multiple of {stages} (halved per upsample)"
            )
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
            raise VocoderConfigError("resblock_kernel_sizes and resblock_dilation_sizes differ in length")
        if self.hop_length != self.code_hop_size:
            raise VocoderConfigError(
                f"code_hop_size {self.code_hop_size} differs from the product of upsample_rates {self.upsample_rates} ({self.hop_length})"
            )
        if self.segment_size % self.code_hop_size:
            raise VocoderConfigError(f"segment_size {self.segment_size} is not a multiple of code_hop_size {self.code_hop_size}")
        expected_in = self.embedding_dim * (2 if self.multispkr else 1)
        if self.model_in_dim != expected_in:
            raise VocoderConfigError(f"model_in_dim {self.model_in_dim}: expected {expected_in} (embedding_dim x speakers)")
        if self.dur_predictor_params is not None:
            needed = {"encoder_embed_dim", "var_pred_hidden_dim", "var_pred_kernel_size", "var_pred_dropout"}
            missing = needed - set(self.dur_predictor_params)
            if missing:
                raise VocoderConfigError(f"dur_predictor_params: missing {sorted(missing)}")
        if self.dur_prediction_weight is not None and not self.dur_prediction_weight >= 0:
            raise VocoderConfigError(f"dur_prediction_weight: expected a number >= 0 (0: no duration predictor), got {self.dur_prediction_weight}")

    @classmethod
    def from_dict(cls, values: dict[str, Any], strict: bool = True, source: str = "config") -> VocoderConfig:
        """Builds a config; with strict=False unknown keys (e.g. a published config's data paths) are ignored."""
        unsupported = [key for key in ("f0", "embedder_params", "lang_embedding") if values.get(key)]
        if unsupported:
            raise VocoderConfigError(f"{source}: vocoders conditioned on {unsupported} are not supported (units and speaker ids only)")
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown and strict:
            raise VocoderConfigError(f"{source}: unknown vocoder config keys {unknown}; known keys: {sorted(known)}")
        return cls(**{key: value for key, value in values.items() if key in known})

    @classmethod
    def from_file(cls, path: str | Path, strict: bool | None = None) -> VocoderConfig:
        """Reads a YAML (ours, strict) or JSON (published, tolerant) config."""
        path = Path(path)
        if not path.is_file():
            raise VocoderConfigError(f"{path}: vocoder config not found")
        text = path.read_text(encoding="utf-8")
        is_json = path.suffix == ".json"
        values = json.loads(text) if is_json else yaml.safe_load(text)
        if not isinstance(values, dict):
            raise VocoderConfigError(f"{path}: expected a mapping of config keys")
        return cls.from_dict(values, strict=(not is_json) if strict is None else strict, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def generator_dict(self) -> dict[str, Any]:
        """The keys that fix the generator's architecture (compared against checkpoints);
        dur_predictor_params is None where no duration predictor is built."""
        keys = (
            "resblock", "upsample_rates", "upsample_kernel_sizes", "upsample_initial_channel",
            "resblock_kernel_sizes", "resblock_dilation_sizes", "num_embeddings", "embedding_dim",
            "model_in_dim", "multispkr", "num_speakers", "dur_predictor_params", "code_hop_size", "sampling_rate",
        )
        values = {key: getattr(self, key) for key in keys}
        if not self.has_duration_predictor:
            values["dur_predictor_params"] = None
        return values
