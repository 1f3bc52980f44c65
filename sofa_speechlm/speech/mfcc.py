"""MFCC + delta + delta-delta features (39 dims) at the unit frame rate, for runs without HuBERT.

As fairseq's MfccFeatureReader (Kaldi MFCC, 13 cepstra, no energy, deltas), but with a 20 ms
shift and 25 ms window so that frames line up with HuBERT's 50 Hz frames (same count for the
same number of samples at 16 kHz).
"""

from __future__ import annotations

import numpy as np
import torch
import torchaudio.compliance.kaldi as kaldi
import torchaudio.functional

from sofa_speechlm.speech.hubert import FeatureError

FRAME_SHIFT_MS = 20.0
FRAME_LENGTH_MS = 25.0


class MfccFeatureReader:
    """[frames, 3 * num_ceps] float32 MFCC features with deltas."""

    def __init__(self, sample_rate: int = 16000, num_ceps: int = 13):
        self.sample_rate = sample_rate
        self.num_ceps = num_ceps
        self.dim = 3 * num_ceps
        self.min_samples = int(sample_rate * FRAME_LENGTH_MS / 1000)

    @torch.inference_mode()
    def extract(self, waveform: np.ndarray) -> np.ndarray:
        if len(waveform) < self.min_samples:
            raise FeatureError(f"{len(waveform)} samples, shorter than one MFCC frame ({self.min_samples})")
        audio = torch.from_numpy(np.asarray(waveform, dtype=np.float32)).view(1, -1)
        mfcc = kaldi.mfcc(
            audio,
            sample_frequency=self.sample_rate,
            frame_shift=FRAME_SHIFT_MS,
            frame_length=FRAME_LENGTH_MS,
            use_energy=False,
            num_ceps=self.num_ceps,
            dither=0.0,
        ).T  # [ceps, frames]
        deltas = torchaudio.functional.compute_deltas(mfcc)
        delta_deltas = torchaudio.functional.compute_deltas(deltas)
        return torch.cat([mfcc, deltas, delta_deltas], dim=0).T.contiguous().numpy()
