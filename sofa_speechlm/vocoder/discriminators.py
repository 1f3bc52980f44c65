"""HiFi-GAN's multi-period (MPD) and multi-scale (MSD) discriminators.

`scale` shrinks every channel count (1.0 = HiFi-GAN's sizes) so a tiny recipe can train on CPU.
Each discriminator returns its logits and the feature maps used by the feature-matching loss.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm, weight_norm

from sofa_speechlm.vocoder.generator import LRELU_SLOPE

FeatureMaps = list[torch.Tensor]


def scaled(channels: int, scale: float) -> int:
    return max(1, int(round(channels * scale)))


def conv_stack(convs: nn.ModuleList, conv_post: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, FeatureMaps]:
    """Leaky-ReLU conv layers then the output conv: (flattened logits, every layer's output)."""
    features = []
    for conv in convs:
        x = F.leaky_relu(conv(x), LRELU_SLOPE)
        features.append(x)
    x = conv_post(x)
    features.append(x)
    return x.flatten(1), features


class PeriodDiscriminator(nn.Module):
    """Looks at the waveform folded into [frames, period]: 2-D convs along time per phase."""

    def __init__(self, period: int, scale: float = 1.0, kernel_size: int = 5, stride: int = 3):
        super().__init__()
        self.period = period
        widths = [1] + [scaled(c, scale) for c in (32, 128, 512, 1024, 1024)]
        padding = ((kernel_size - 1) // 2, 0)
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv2d(c_in, c_out, (kernel_size, 1), (stride if i < 4 else 1, 1), padding=padding))
            for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:]))
        )
        self.conv_post = weight_norm(nn.Conv2d(widths[-1], 1, (3, 1), 1, padding=(1, 0)))

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, FeatureMaps]:
        x = wav.unsqueeze(1)
        batch, channels, length = x.shape
        if length % self.period:
            x = F.pad(x, (0, self.period - length % self.period), mode="reflect")
        return conv_stack(self.convs, self.conv_post, x.view(batch, channels, -1, self.period))


class ScaleDiscriminator(nn.Module):
    """Grouped strided 1-D convs over the (average-pooled) waveform."""

    LAYERS = ((1, 128, 15, 1, 1), (128, 128, 41, 2, 4), (128, 256, 41, 2, 16), (256, 512, 41, 4, 16),
              (512, 1024, 41, 4, 16), (1024, 1024, 41, 1, 16), (1024, 1024, 5, 1, 1))  # in, out, kernel, stride, groups

    def __init__(self, scale: float = 1.0, use_spectral_norm: bool = False):
        super().__init__()
        norm = spectral_norm if use_spectral_norm else weight_norm
        convs = []
        for c_in, c_out, kernel, stride, groups in self.LAYERS:
            c_in = 1 if c_in == 1 else scaled(c_in, scale)
            c_out = scaled(c_out, scale)
            groups = math.gcd(groups, math.gcd(c_in, c_out))
            convs.append(norm(nn.Conv1d(c_in, c_out, kernel, stride, groups=groups, padding=(kernel - 1) // 2)))
        self.convs = nn.ModuleList(convs)
        self.conv_post = norm(nn.Conv1d(scaled(1024, scale), 1, 3, 1, padding=1))

    def forward(self, wav: torch.Tensor) -> tuple[torch.Tensor, FeatureMaps]:
        return conv_stack(self.convs, self.conv_post, wav.unsqueeze(1))


class MultiDiscriminator(nn.Module):
    """Runs sub-discriminators on real and generated audio: (real logits, fake logits, real maps, fake maps).

    Subclasses set `discriminators` and `inputs(wav)`, the signal each sub-discriminator sees.
    """

    discriminators: nn.ModuleList

    def forward(self, real: torch.Tensor, fake: torch.Tensor):
        """Real and generated audio go through each sub-discriminator as one batch."""
        real_logits, fake_logits, real_maps, fake_maps = [], [], [], []
        for discriminator, both in zip(self.discriminators, self.inputs(torch.cat([real, fake]))):
            logits, maps = discriminator(both)
            real_part, fake_part = logits.chunk(2)
            real_logits.append(real_part)
            fake_logits.append(fake_part)
            real_maps.append([m.chunk(2)[0] for m in maps])
            fake_maps.append([m.chunk(2)[1] for m in maps])
        return real_logits, fake_logits, real_maps, fake_maps


class MultiPeriodDiscriminator(MultiDiscriminator):
    def __init__(self, scale: float = 1.0, periods: tuple[int, ...] = (2, 3, 5, 7, 11)):
        super().__init__()
        self.discriminators = nn.ModuleList(PeriodDiscriminator(period, scale) for period in periods)

    def inputs(self, wav: torch.Tensor) -> list[torch.Tensor]:
        return [wav] * len(self.discriminators)


class MultiScaleDiscriminator(MultiDiscriminator):
    def __init__(self, scale: float = 1.0, num_scales: int = 3):
        super().__init__()
        self.discriminators = nn.ModuleList(
            ScaleDiscriminator(scale, use_spectral_norm=(index == 0)) for index in range(num_scales)
        )
        self.pool = nn.AvgPool1d(4, 2, padding=2)

    def inputs(self, wav: torch.Tensor) -> list[torch.Tensor]:
        scales = [wav]
        for _ in range(len(self.discriminators) - 1):
            scales.append(self.pool(scales[-1].unsqueeze(1)).squeeze(1))
        return scales
