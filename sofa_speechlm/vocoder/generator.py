"""The unit HiFi-GAN generator (speech-resynthesis "CodeGenerator" / fairseq CodeHiFiGANVocoder).

Unit ids -> 128-dim embeddings (optionally concatenated with a speaker embedding) -> HiFi-GAN's
transposed-convolution upsampler with multi-receptive-field residual blocks -> waveform.
Module names match the published checkpoints (dict, spkr, dur_predictor, conv_pre, ups,
resblocks, conv_post) so their state dicts map one to one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import weight_norm

from sofa_speechlm.vocoder.config import VocoderConfig

LRELU_SLOPE = 0.1


def same_padding(kernel_size: int, dilation: int = 1) -> int:
    return (kernel_size * dilation - dilation) // 2


def init_conv(module: nn.Module) -> None:
    """HiFi-GAN's N(0, 0.01) init for the generator's convolutions."""
    if isinstance(module, (nn.Conv1d, nn.ConvTranspose1d)):
        module.weight.data.normal_(0.0, 0.01)


class ResBlock1(nn.Module):
    """Two dilated convolutions per dilation, each pair with a residual connection."""

    def __init__(self, channels: int, kernel_size: int, dilations: list[int]):
        super().__init__()
        self.convs1 = nn.ModuleList(
            weight_norm(nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=same_padding(kernel_size, d)))
            for d in dilations
        )
        self.convs2 = nn.ModuleList(
            weight_norm(nn.Conv1d(channels, channels, kernel_size, padding=same_padding(kernel_size))) for _ in dilations
        )
        self.apply(init_conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv1, conv2 in zip(self.convs1, self.convs2):
            residual = conv2(F.leaky_relu(conv1(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE))
            x = x + residual
        return x


class ResBlock2(nn.Module):
    """The lighter HiFi-GAN V3 block: one dilated convolution per residual connection."""

    def __init__(self, channels: int, kernel_size: int, dilations: list[int]):
        super().__init__()
        self.convs = nn.ModuleList(
            weight_norm(nn.Conv1d(channels, channels, kernel_size, dilation=d, padding=same_padding(kernel_size, d)))
            for d in dilations[:2]
        )
        self.apply(init_conv)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for conv in self.convs:
            x = x + conv(F.leaky_relu(x, LRELU_SLOPE))
        return x


class DurationPredictor(nn.Module):
    """Predicts log(1 + duration) per de-duplicated unit (fairseq's VariancePredictor layout)."""

    def __init__(self, encoder_embed_dim: int, var_pred_hidden_dim: int, var_pred_kernel_size: int, var_pred_dropout: float):
        super().__init__()
        self.conv1 = nn.Sequential(
            nn.Conv1d(encoder_embed_dim, var_pred_hidden_dim, var_pred_kernel_size, padding=(var_pred_kernel_size - 1) // 2),
            nn.ReLU(),
        )
        self.ln1 = nn.LayerNorm(var_pred_hidden_dim)
        self.conv2 = nn.Sequential(
            nn.Conv1d(var_pred_hidden_dim, var_pred_hidden_dim, var_pred_kernel_size, padding=1),
            nn.ReLU(),
        )
        self.ln2 = nn.LayerNorm(var_pred_hidden_dim)
        self.dropout = nn.Dropout(var_pred_dropout)
        self.proj = nn.Linear(var_pred_hidden_dim, 1)

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        """[batch, length, dim] unit embeddings -> [batch, length] log(1 + duration)."""
        x = self.conv1(embeddings.transpose(1, 2)).transpose(1, 2)
        x = self.dropout(self.ln1(x))
        x = self.conv2(x.transpose(1, 2)).transpose(1, 2)
        x = self.dropout(self.ln2(x))
        return self.proj(x).squeeze(-1)


class HiFiGANUpsampler(nn.Module):
    """HiFi-GAN's body, shared by the unit and the mel generators: conv_pre, transposed-convolution
    upsamplers (ups) with multi-receptive-field residual blocks (resblocks), conv_post. The module
    names are the published ones; `config` gives the HiFi-GAN keys (upsample_rates, ...)."""

    def build_upsampler(self, config, in_channels: int) -> None:
        channels = config.upsample_initial_channel
        self.conv_pre = weight_norm(nn.Conv1d(in_channels, channels, 7, padding=3))
        self.ups = nn.ModuleList()
        self.resblocks = nn.ModuleList()
        block = ResBlock1 if config.resblock == "1" else ResBlock2
        for rate, kernel in zip(config.upsample_rates, config.upsample_kernel_sizes):
            self.ups.append(weight_norm(nn.ConvTranspose1d(channels, channels // 2, kernel, rate, padding=(kernel - rate) // 2)))
            channels //= 2
            for block_kernel, dilations in zip(config.resblock_kernel_sizes, config.resblock_dilation_sizes):
                self.resblocks.append(block(channels, block_kernel, dilations))
        self.conv_post = weight_norm(nn.Conv1d(channels, 1, 7, padding=3))
        self.ups.apply(init_conv)
        self.conv_post.apply(init_conv)

    def upsample(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, in_channels, frames] -> waveform [batch, samples]."""
        x = self.conv_pre(x)
        blocks_per_stage = len(self.config.resblock_kernel_sizes)
        for stage, upsample in enumerate(self.ups):
            x = upsample(F.leaky_relu(x, LRELU_SLOPE))
            blocks = self.resblocks[stage * blocks_per_stage : (stage + 1) * blocks_per_stage]
            x = sum(block(x) for block in blocks) / blocks_per_stage
        x = self.conv_post(F.leaky_relu(x))  # default slope 0.01 here, as in HiFi-GAN
        return torch.tanh(x).squeeze(1)

    def remove_weight_norm(self):
        """Folds weight norm into plain weights: the same output, faster inference."""
        for module in self.modules():
            if parametrize.is_parametrized(module, "weight"):
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
        return self


class CodeHiFiGANGenerator(HiFiGANUpsampler):
    """Units [batch, frames] (and speaker ids [batch]) -> waveform [batch, frames * code_hop_size]."""

    def __init__(self, config: VocoderConfig):
        super().__init__()
        self.config = config
        self.dict = nn.Embedding(config.num_embeddings, config.embedding_dim)
        self.spkr = nn.Embedding(config.num_speakers, config.embedding_dim) if config.multispkr else None
        self.dur_predictor = DurationPredictor(**config.dur_predictor_params) if config.has_duration_predictor else None

        self.build_upsampler(config, config.model_in_dim)

    def embed(self, units: torch.Tensor, speakers: torch.Tensor | None = None) -> torch.Tensor:
        """[batch, channels, frames] generator input."""
        x = self.dict(units).transpose(1, 2)
        if self.spkr is not None:
            if speakers is None:
                raise ValueError("this vocoder has a speaker embedding (multispkr): speaker ids are required")
            speaker = self.spkr(speakers).unsqueeze(-1).expand(-1, -1, x.size(-1))
            x = torch.cat([x, speaker], dim=1)
        return x

    def forward(self, units: torch.Tensor, speakers: torch.Tensor | None = None) -> torch.Tensor:
        return self.upsample(self.embed(units, speakers))

    def duration_loss(self, units: torch.Tensor) -> torch.Tensor:
        """MSE of the predicted log(1 + duration) of each run of equal units in `units` [batch, frames]."""
        if self.dur_predictor is None:
            raise ValueError("this vocoder has no duration predictor (no dur_predictor_params, or dur_prediction_weight 0)")
        losses = []
        for row in units:
            runs, durations = torch.unique_consecutive(row, return_counts=True)
            predicted = self.dur_predictor(self.dict(runs).unsqueeze(0)).squeeze(0)
            losses.append(F.mse_loss(predicted, torch.log1p(durations.float())))
        return torch.stack(losses).mean()

    @torch.no_grad()
    def predict_durations(self, units: torch.Tensor) -> torch.Tensor:
        """Frames per de-duplicated unit of one utterance [length] (at least 1 each)."""
        if self.dur_predictor is None:
            raise ValueError("this vocoder has no duration predictor: it cannot expand de-duplicated units")
        log_durations = self.dur_predictor(self.dict(units).unsqueeze(0)).squeeze(0)
        return torch.clamp(torch.round(torch.expm1(log_durations)).long(), min=1)
