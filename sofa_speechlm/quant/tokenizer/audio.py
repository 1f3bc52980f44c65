"""Calibration / dev / test audio: a seeded sample of utterances of one or more data dirs."""
from __future__ import annotations

import logging

import numpy as np

from sofa_speechlm.data import DataDir
from sofa_speechlm.speech.features import read_waveforms


class AudioShortage(ValueError):
    """Less usable audio than a step needs."""


def sample_waveforms(data_dirs: list[str], num_utts: int, seed: int, sample_rate: int, option: str,
                     min_seconds: float = 0.0, min_samples: int = 1) -> dict[str, np.ndarray]:
    """utt_id -> waveform of up to ``num_utts`` utterances drawn (seeded) from ``data_dirs``;
    unreadable audio and audio shorter than one frame (``min_samples``) is left out. Raises
    naming ``option`` when less than ``min_seconds`` of audio remains."""
    if num_utts < 1:
        raise AudioShortage(f"{option}: the number of utterances must be at least 1, got {num_utts}")
    candidates = [(data_dir, utt_id) for data_dir in data_dirs for utt_id in DataDir(data_dir).utt_ids]
    order = np.random.default_rng(seed).permutation(len(candidates))
    chosen = sorted(candidates[index] for index in order[:num_utts])
    waveforms: dict[str, np.ndarray] = {}
    for data_dir in data_dirs:
        ids = [utt_id for source, utt_id in chosen if source == data_dir]
        for utt_id, waveform, reason in read_waveforms(DataDir(data_dir), sample_rate, ids):
            if waveform is None or len(waveform) < min_samples:
                logging.warning("%s %s: left out (%s)", data_dir, utt_id, reason or f"shorter than one frame ({min_samples} samples)")
                continue
            waveforms[f"{data_dir}/{utt_id}" if len(data_dirs) > 1 else utt_id] = waveform
    seconds = sum(len(waveform) for waveform in waveforms.values()) / sample_rate
    if not waveforms or seconds < min_seconds:
        raise AudioShortage(f"{option} {' '.join(map(str, data_dirs))}: {len(waveforms)} usable utterances, {seconds:.2f} s of audio; "
                            f"at least {min_seconds:g} s are needed (more utterances or another data dir)")
    logging.info("%s: %d utterances, %.1f s of audio", option, len(waveforms), seconds)
    return waveforms
