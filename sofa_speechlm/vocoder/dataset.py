"""Random (waveform, units) training segments from Kaldi data dirs with a `units` file.

Units are at code_hop_size samples per frame (50 Hz at 16 kHz). Feature extractors drop a
frame or two at the edges, so units and audio are aligned from the start and trimmed to the
shorter; a larger disagreement means units of other audio (or another rate) and is an error.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from sofa_speechlm.data import DataDir, DataDirError, iter_utterances
from sofa_speechlm.vocoder.config import VocoderConfig
from sofa_speechlm.speech.units import parse_units

PEAK = 0.95  # audio is peak-normalized to this level, as in speech-resynthesis


@dataclass
class Utterance:
    data_dir: DataDir
    utt_id: str
    units: torch.Tensor
    speaker: int


def frame_tolerance(frames: int) -> int:
    return 2 + frames // 50


class UnitWaveformDataset(Dataset):
    """One random segment_size window per utterance and access; shorter utterances are zero-padded."""

    def __init__(self, data_dirs: list[str | Path], config: VocoderConfig):
        self.config = config
        self.segment_frames = config.segment_size // config.code_hop_size
        self.utterances: list[Utterance] = []
        speakers = {name: index for index, name in enumerate(config.speakers or [])}
        seen = set()
        for path in data_dirs:
            data_dir = DataDir(path)
            units = data_dir.units
            if units is None:
                raise DataDirError(f"{data_dir.path}: no units file (stage 2a writes it)")
            utt2spk = data_dir.utt2spk
            for utt_id, value in units.items():
                if utt_id in seen:
                    continue
                seen.add(utt_id)
                speaker = 0
                if config.multispkr:
                    name = utt2spk.get(utt_id)
                    if name not in speakers:
                        raise DataDirError(f"{data_dir.path / 'utt2spk'}: utterance {utt_id} has speaker {name}, not in the config's speakers")
                    speaker = speakers[name]
                ids = parse_units(value, f"{data_dir.path / 'units'}: utterance {utt_id}", config.num_embeddings)
                self.utterances.append(Utterance(data_dir, utt_id, torch.tensor(ids, dtype=torch.long), speaker))
        if not self.utterances:
            raise DataDirError(f"no utterances with units in {[str(p) for p in data_dirs]}")
        logging.info("vocoder data: %d utterances from %d data dirs", len(self.utterances), len(data_dirs))

    def __len__(self) -> int:
        return len(self.utterances)

    def aligned(self, index: int) -> tuple[np.ndarray, torch.Tensor]:
        """The whole utterance: peak-normalized audio and units trimmed to the same duration."""
        item = self.utterances[index]
        hop = self.config.code_hop_size
        _, wav = next(iter_utterances(item.data_dir, self.config.sampling_rate, [item.utt_id]))
        audio_frames = len(wav) // hop
        if abs(audio_frames - len(item.units)) > frame_tolerance(audio_frames):
            raise DataDirError(
                f"{item.data_dir.path / 'units'}: utterance {item.utt_id} has {len(item.units)} units but its audio "
                f"holds {audio_frames} frames of {hop} samples at {self.config.sampling_rate} Hz"
            )
        frames = min(audio_frames, len(item.units))
        wav = wav[: frames * hop]
        wav = wav * (PEAK / max(float(np.abs(wav).max()), 1e-5))
        return wav.astype(np.float32), item.units[:frames]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        wav, units = self.aligned(index)
        hop = self.config.code_hop_size
        if len(units) >= self.segment_frames:
            start = random.randint(0, len(units) - self.segment_frames)
            units = units[start : start + self.segment_frames]
            wav = wav[start * hop : (start + self.segment_frames) * hop]
        else:
            missing = self.segment_frames - len(units)
            units = torch.cat([units, units[-1:].expand(missing)])
            wav = np.pad(wav, (0, missing * hop))
        return torch.from_numpy(np.ascontiguousarray(wav)), units, self.utterances[index].speaker
