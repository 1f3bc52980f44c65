"""HiFi-GAN's training losses: LSGAN adversarial terms, feature matching and log-mel L1.

The generator objective is adv + 2 * feature matching + 45 * mel L1 (HiFi-GAN, Kong et al. 2020).
"""

from __future__ import annotations

import torch
import torchaudio
from torch import nn

from sofa_speechlm.vocoder.config import VocoderConfig

FEATURE_MATCHING_WEIGHT = 2.0
MEL_WEIGHT = 45.0


def discriminator_loss(real_logits: list[torch.Tensor], fake_logits: list[torch.Tensor]) -> torch.Tensor:
    """LSGAN: real logits towards 1, generated towards 0, summed over sub-discriminators."""
    return sum(torch.mean((1 - real) ** 2) + torch.mean(fake**2) for real, fake in zip(real_logits, fake_logits))


def adversarial_loss(fake_logits: list[torch.Tensor]) -> torch.Tensor:
    """LSGAN generator term: generated logits towards 1."""
    return sum(torch.mean((1 - fake) ** 2) for fake in fake_logits)


def feature_matching_loss(real_maps: list[list[torch.Tensor]], fake_maps: list[list[torch.Tensor]]) -> torch.Tensor:
    """L1 between the discriminator's intermediate features on real and generated audio."""
    return sum(
        torch.mean(torch.abs(real.detach() - fake))
        for real_layers, fake_layers in zip(real_maps, fake_maps)
        for real, fake in zip(real_layers, fake_layers)
    )


class LogMel(nn.Module):
    """HiFi-GAN's loss features: log of the magnitude mel spectrogram (Slaney mel), floored at 1e-5."""

    def __init__(self, config: VocoderConfig):
        super().__init__()
        self.mel = torchaudio.transforms.MelSpectrogram(
            sample_rate=config.sampling_rate,
            n_fft=config.n_fft,
            win_length=config.win_size,
            hop_length=config.hop_size,
            f_min=config.fmin,
            f_max=config.fmax_for_loss,
            n_mels=config.num_mels,
            power=1.0,
            norm="slaney",
            mel_scale="slaney",
        )

    def forward(self, wav: torch.Tensor) -> torch.Tensor:
        return torch.log(torch.clamp(self.mel(wav), min=1e-5))
