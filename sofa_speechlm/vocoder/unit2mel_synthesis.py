"""Units -> log-mel (unit-to-mel model) -> waveform (pretrained HiFi-GAN) -> `output_sampling_rate`.

The unit-to-mel model runs on padded, masked batches; the mel vocoder runs one utterance at a
time (its receptive field would otherwise reach into a neighbour's padding), so an utterance's
waveform does not depend on which batch it was in.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torchaudio

from sofa_speechlm.vocoder.config import VocoderConfigError
from sofa_speechlm.vocoder.mel_hifigan import MelHiFiGANGenerator, installed_checkpoint, load_mel_generator
from sofa_speechlm.vocoder.unit2mel import Unit2Mel, Unit2MelConfig

MODEL_NAME = "unit2mel.pth"


class Unit2MelVocoder:
    """The `load_vocoder` interface for kind unit2mel_hifigan: 50 Hz units in, waveforms at `sampling_rate` out."""

    def __init__(self, model: Unit2Mel, generator: MelHiFiGANGenerator):
        self.model = model.eval()
        self.generator = generator.eval()
        self.config = model.config
        self.sampling_rate = self.config.output_sampling_rate
        self.num_embeddings = self.config.num_embeddings

    def check_units(self, utt_id: str, units: torch.Tensor) -> None:
        if units.dim() != 1 or len(units) == 0:
            raise ValueError(f"utterance {utt_id}: expected a non-empty 1-d tensor of unit ids, got shape {tuple(units.shape)}")
        bad = (units < 0) | (units >= self.num_embeddings)
        if bad.any():
            position = int(bad.nonzero()[0])
            raise ValueError(
                f"utterance {utt_id}: unit id {int(units[position])} at position {position} is outside the "
                f"vocoder's codebook [0, {self.num_embeddings - 1}]"
            )

    @torch.inference_mode()
    def waveform(self, mel: torch.Tensor, units: int) -> np.ndarray:
        """One utterance's log-mel [mels, frames] -> float32 waveform of units * code_hop_size samples at sampling_rate."""
        config = self.config
        audio = self.generator(mel.unsqueeze(0))[0].float().cpu()
        audio = torchaudio.functional.resample(audio, config.sampling_rate, self.sampling_rate)
        samples = units * config.code_hop_size * self.sampling_rate // config.unit_sampling_rate
        audio = torch.nn.functional.pad(audio, (0, max(0, samples - len(audio))))[:samples]
        return audio.numpy()

    @torch.inference_mode()
    def synthesize(self, utterances: dict[str, torch.Tensor], batch_size: int = 8) -> Iterator[tuple[str, np.ndarray]]:
        """(utt_id, float32 waveform at `sampling_rate`) per utterance of 50 Hz units, longest first."""
        for utt_id, units in utterances.items():
            self.check_units(utt_id, units)
        device = next(self.model.parameters()).device
        order = sorted(utterances, key=lambda utt_id: len(utterances[utt_id]), reverse=True)
        for start in range(0, len(order), batch_size):
            batch_ids = order[start : start + batch_size]
            lengths = torch.tensor([len(utterances[i]) for i in batch_ids], device=device)
            padded = torch.zeros(len(batch_ids), int(lengths.max()), dtype=torch.long, device=device)
            for row, utt_id in enumerate(batch_ids):
                padded[row, : lengths[row]] = utterances[utt_id].to(device)
            mels, frame_lengths = self.model(padded, lengths)
            for row, utt_id in enumerate(batch_ids):
                yield utt_id, self.waveform(mels[row, :, : frame_lengths[row]], int(lengths[row]))


def read_unit2mel(path: str | Path) -> Unit2Mel:
    """The model of a unit2mel.pth file ({"model": state_dict, "config": dict})."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: unit-to-mel model not found (stage 2b writes it)")
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt files
        raise VocoderConfigError(f"{path}: not a readable torch checkpoint ({type(error).__name__}: {error})") from None
    if not isinstance(saved, dict) or not {"model", "config"} <= set(saved):
        raise VocoderConfigError(f"{path}: expected a dict with keys 'model' and 'config' (a unit-to-mel model)")
    model = Unit2Mel(Unit2MelConfig.from_dict(saved["config"], source=f"{path} (stored config)"))
    try:
        model.load_state_dict(saved["model"])
    except RuntimeError as error:
        raise VocoderConfigError(f"{path}: the weights do not fit the stored config ({error})") from None
    return model


def load_unit2mel_vocoder(vocoder_dir: str | Path, device: str = "cpu", pretrained_vocoder: str | Path | None = None) -> Unit2MelVocoder:
    """unit2mel.pth of `vocoder_dir` and the pretrained generator named in its config (or `pretrained_vocoder`)."""
    model_path = Path(vocoder_dir) / MODEL_NAME
    model = read_unit2mel(model_path)
    generator_path = Path(pretrained_vocoder or model.config.pretrained_vocoder or installed_checkpoint())
    generator = load_mel_generator(generator_path)
    model.config.convention.check_matches(
        generator.config.convention, f"the unit-to-mel model ({model_path})", f"the mel vocoder ({generator_path.parent / 'config.json'})"
    )
    return Unit2MelVocoder(model.to(device), generator.to(device).remove_weight_norm())
