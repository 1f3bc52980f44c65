"""Shared helpers of the vocoder tests (no tests here): a tiny config, tiny (wav, units) data
dirs, and a hand-written checkpoint in the published speech-resynthesis/fairseq layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import soundfile
import torch

from sofa_speechlm.data import write_table
from sofa_speechlm.vocoder import CodeHiFiGANGenerator, VocoderConfig

HOP = 320


def tiny_config(**overrides) -> VocoderConfig:
    values = dict(
        upsample_initial_channel=32, embedding_dim=8, num_embeddings=20,
        resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3, 5]],
        segment_size=4 * HOP, batch_size=2, discriminator_scale=1 / 32,
        max_steps=2, log_interval=1, summary_interval=2, checkpoint_interval=1,
    )
    values.update(overrides)
    return VocoderConfig(**values)


def make_unit_dir(path: Path, frames: list[int], num_embeddings: int = 20, units_frames: list[int] | None = None) -> Path:
    """A data dir of generated tones with `frames[i] * 320` samples and random units."""
    rng = np.random.default_rng(0)
    path.mkdir(parents=True, exist_ok=True)
    wav_scp, units, utt2spk = {}, {}, {}
    for index, count in enumerate(frames):
        utt_id = f"spk{index % 2}-utt{index}"
        t = np.arange(count * HOP) / 16000
        wav = (0.5 * np.sin(2 * np.pi * (150 + 50 * index) * t) + 0.02 * rng.standard_normal(len(t))).astype(np.float32)
        soundfile.write(path / f"{utt_id}.wav", wav, 16000)
        wav_scp[utt_id] = str(path / f"{utt_id}.wav")
        unit_count = units_frames[index] if units_frames else count
        units[utt_id] = " ".join(str(u) for u in rng.integers(0, num_embeddings, unit_count))
        utt2spk[utt_id] = f"spk{index % 2}"
    write_table(path / "wav.scp", wav_scp)
    write_table(path / "units", units)
    write_table(path / "utt2spk", utt2spk)
    return path


def write_published_checkpoint(generator: CodeHiFiGANGenerator, directory: Path, fold_weight_norm: bool = False) -> Path:
    """Writes g_00000100 + config.json the way speech-resynthesis does, key by key, with
    weight_g/weight_v (or, with fold_weight_norm, plain weights as after remove_weight_norm)."""
    state = {}
    for name, module in generator.named_modules():
        parametrizations = getattr(module, "parametrizations", None)
        if parametrizations is not None and "weight" in parametrizations:
            g, v = parametrizations.weight.original0, parametrizations.weight.original1
            if fold_weight_norm:
                state[f"{name}.weight"] = module.weight.detach().clone()
            else:
                state[f"{name}.weight_g"] = g.detach().clone()
                state[f"{name}.weight_v"] = v.detach().clone()
            if module.bias is not None:
                state[f"{name}.bias"] = module.bias.detach().clone()
        else:
            for key, value in module.named_parameters(recurse=False):
                state[f"{name}.{key}"] = value.detach().clone()
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "g_00000100"
    torch.save({"generator": state}, path)
    config = generator.config.generator_dict()
    config.update(resblock=int(config["resblock"]), num_workers=4, dist_config={"dist_backend": "nccl"},
                  input_training_file="train.txt", num_mels=80, segment_size=8960, learning_rate=0.0002)
    (directory / "config.json").write_text(json.dumps(config))
    return path


def write_mel_generator(directory: Path, **config_overrides) -> Path:
    """A tiny random HiFi-GAN mel generator in the published layout, with its config.json beside it."""
    from sofa_speechlm.vocoder.checkpoint import to_published_keys
    from sofa_speechlm.vocoder.mel_hifigan import MelGeneratorConfig, MelHiFiGANGenerator

    values = dict(
        resblock="1", upsample_rates=[8, 8, 2, 2], upsample_kernel_sizes=[16, 16, 4, 4], upsample_initial_channel=16,
        resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3, 5]],
        sampling_rate=22050, num_mels=80, n_fft=1024, hop_size=256, win_size=1024, fmin=0, fmax=8000,
    )
    values.update(config_overrides)
    torch.manual_seed(0)
    generator = MelHiFiGANGenerator(MelGeneratorConfig.from_dict(values))
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "generator_tiny"
    torch.save({"generator": to_published_keys(generator.state_dict())}, path)
    (directory / "config.json").write_text(json.dumps(values))
    return path
