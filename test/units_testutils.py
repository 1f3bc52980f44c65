"""Shared test data for the unit and vocabulary tests (no tests here): tiny wav data dirs and a
tiny random HuBERT with HuBERT's real frame rate (400-sample window, 320-sample hop)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile
import torch

from sofa_speechlm.data import write_table
from sofa_speechlm.data.kaldi import spk2utt_from_utt2spk
from sofa_speechlm.speech.units import write_units


def tone(seconds: float, frequency: float, fs: int = 16000, seed: int = 0) -> np.ndarray:
    """A sine with a little noise, so that features vary over time."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * fs)) / fs
    sweep = np.sin(2 * np.pi * frequency * t * (1 + 0.5 * t))
    return (0.5 * sweep + 0.05 * rng.standard_normal(len(t))).astype(np.float32)


def make_speech_dir(path: Path, count: int = 6, fs: int = 16000, texts: bool = True, seconds: float = 0.6) -> dict[str, Path]:
    """A speech data dir with `count` generated wavs; returns uttid -> wav path."""
    path.mkdir(parents=True, exist_ok=True)
    wav_dir = path / "wav"
    wav_dir.mkdir(exist_ok=True)
    wavs = {}
    for index in range(count):
        utt_id = f"spk{index % 2}-utt{index:03d}"
        wavs[utt_id] = wav_dir / f"{utt_id}.wav"
        soundfile.write(wavs[utt_id], tone(seconds + 0.1 * index, 200 + 50 * index, fs, seed=index), fs)
    write_table(path / "wav.scp", {utt_id: str(wav) for utt_id, wav in wavs.items()})
    utt2spk = {utt_id: utt_id.split("-")[0] for utt_id in wavs}
    write_table(path / "utt2spk", utt2spk)
    write_table(path / "spk2utt", spk2utt_from_utt2spk(utt2spk))
    if texts:
        write_table(path / "text", {utt_id: f"HELLO WORLD NUMBER {index}" for index, utt_id in enumerate(wavs)})
    return wavs


def tiny_hubert(stable_layer_norm: bool = False, layers: int = 7, seed: int = 0):
    """A random transformers HubertModel (eval mode) small enough for tests."""
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(seed)
    config = HubertConfig(
        hidden_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16,) * 7,
        conv_kernel=(10, 3, 3, 3, 3, 2, 2),
        conv_stride=(5, 2, 2, 2, 2, 2, 2),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        do_stable_layer_norm=stable_layer_norm,
        feat_extract_norm="layer" if stable_layer_norm else "group",
        mask_time_prob=0.0,
    )
    return HubertModel(config).eval()


def make_split(root, with_units=True):
    """root/{textlm,speechlm,asr,tts} with 4 utterances each; units 0..K-1 derived from the index."""
    units = {}
    for task in ("speechlm", "asr", "tts"):
        wavs = make_speech_dir(root / task, count=4, texts=task != "speechlm")
        units = {utt_id: [(3 * i + j) % 50 for j in range(10 + i)] for i, utt_id in enumerate(sorted(wavs))}
        if with_units:
            write_units(root / task, units)
    write_table(root / "textlm" / "text", {f"text{i}": f"SOME TEXT LINE {i}" for i in range(5)})
    write_table(root / "textlm" / "utt2spk", {f"text{i}": f"text{i}" for i in range(5)})
    return units
