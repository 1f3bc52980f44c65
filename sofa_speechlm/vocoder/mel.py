"""Log-mel features in the exact convention of the pretrained HiFi-GAN mel vocoders.

HiFi-GAN's meldataset.py: librosa's Slaney mel basis, reflect padding of (n_fft - hop) / 2 on
both sides, an uncentred STFT with a Hann window, magnitude sqrt(re^2 + im^2 + 1e-9), mel
projection, log(clamp(x, 1e-5)). A unit-to-mel model trained on other features would feed the
generator spectra it has never seen, so the convention travels with both (and is compared).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
import torch.nn.functional as F

PEAK = 0.95  # meldataset.py peak-normalizes training audio to this level
LOG_FLOOR = 1e-5


class MelConventionError(ValueError):
    """Two components that disagree on the mel features they exchange."""


@dataclasses.dataclass(frozen=True)
class MelConvention:
    """The feature settings a mel vocoder was trained on (HiFi-GAN V1 universal / LJSpeech defaults)."""

    sampling_rate: int = 22050
    num_mels: int = 80
    n_fft: int = 1024
    hop_size: int = 256
    win_size: int = 1024
    fmin: float = 0.0
    fmax: float | None = 8000.0

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MelConvention:
        """Picks the convention's keys out of a (HiFi-GAN config.json-like) mapping; others are ignored."""
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: values[key] for key in names if key in values})

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def check_matches(self, other: MelConvention, mine: str, theirs: str) -> None:
        """Raises naming each setting on which `mine` and `theirs` differ."""
        differing = [
            f"{key}: {value} in {mine}, {getattr(other, key)} in {theirs}"
            for key, value in self.to_dict().items()
            if value != getattr(other, key)
        ]
        if differing:
            raise MelConventionError("mel feature convention mismatch: " + "; ".join(differing))

    def frames_for_samples(self, samples: int) -> int:
        """Frames of an utterance of `samples` samples (the padding makes it samples // hop)."""
        return samples // self.hop_size


class LogMelExtractor(torch.nn.Module):
    """Waveform [batch, samples] at `convention.sampling_rate` -> log-mel [batch, num_mels, samples // hop]."""

    def __init__(self, convention: MelConvention = MelConvention()):
        super().__init__()
        import librosa

        self.convention = c = convention
        basis = librosa.filters.mel(sr=c.sampling_rate, n_fft=c.n_fft, n_mels=c.num_mels, fmin=c.fmin, fmax=c.fmax)
        self.register_buffer("mel_basis", torch.from_numpy(basis).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(c.win_size), persistent=False)

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        c = self.convention
        pad = (c.n_fft - c.hop_size) // 2
        wav = F.pad(wav.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
        spec = torch.stft(
            wav, c.n_fft, hop_length=c.hop_size, win_length=c.win_size, window=self.window,
            center=False, normalized=False, onesided=True, return_complex=True,
        )
        magnitude = torch.sqrt(spec.real.pow(2) + spec.imag.pow(2) + 1e-9)
        return torch.log(torch.clamp(self.mel_basis @ magnitude, min=LOG_FLOOR))
