"""Batched unit-to-waveform synthesis.

A batch holds only utterances of the same number of units: the generator's convolutions see
past an utterance's end, so padding a shorter one would change its last samples and make its
waveform depend on its batch neighbours. Equal lengths keep the output the same as
one-at-a-time synthesis; corpora of many equal lengths (e.g. TTS test sets) still batch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from sofa_speechlm.vocoder.config import VocoderConfigError
from sofa_speechlm.vocoder.generator import CodeHiFiGANGenerator

GENERATOR_FILE = "generator.pth"
CONFIG_FILE = "config.json"
UNIT_HIFIGAN = "unit_hifigan"


class UnitVocoder:
    """What stage 6 and `bin.vocode` need of any vocoder kind: 50 Hz units in, waveforms out."""

    def __init__(self, generator: CodeHiFiGANGenerator):
        self.generator = generator
        self.sampling_rate = generator.config.sampling_rate
        self.num_embeddings = generator.config.num_embeddings

    def synthesize(
        self, utterances: dict[str, torch.Tensor], batch_size: int = 8
    ) -> Iterator[tuple[str, np.ndarray]]:
        """(utt_id, float32 waveform at `sampling_rate`) per utterance of 50 Hz units."""
        return synthesize(self.generator, utterances, batch_size)


def vocoder_kind(vocoder_dir: str | Path) -> str:
    """The `kind` recorded in the dir's config.json; released unit vocoders have none (unit_hifigan)."""
    path = Path(vocoder_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: vocoder config not found (stage 2b writes it)")
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise VocoderConfigError(f"{path}: not valid JSON ({error})") from None
    kind = values.get("kind", UNIT_HIFIGAN) if isinstance(values, dict) else None
    if kind not in VOCODER_KINDS:
        raise VocoderConfigError(f"{path}: unknown vocoder kind {kind!r}; expected one of {list(VOCODER_KINDS)}")
    return kind


def load_unit_hifigan(vocoder_dir: str | Path, device: str = "cpu") -> UnitVocoder:
    from sofa_speechlm.vocoder.checkpoint import load_generator

    return UnitVocoder(load_generator(Path(vocoder_dir) / GENERATOR_FILE).to(device).remove_weight_norm())


def load_unit2mel_hifigan(vocoder_dir: str | Path, device: str = "cpu"):
    from sofa_speechlm.vocoder.unit2mel_synthesis import load_unit2mel_vocoder

    return load_unit2mel_vocoder(vocoder_dir, device)


VOCODER_KINDS = {UNIT_HIFIGAN: load_unit_hifigan, "unit2mel_hifigan": load_unit2mel_hifigan}


def load_vocoder(vocoder_dir: str | Path, device: str = "cpu", kmeans_file: str | Path | None = None):
    """The vocoder that stage 2b left in `vocoder_dir`, whatever its kind (config.json's `kind`).

    Every kind has `.sampling_rate` (16000 for both kinds here), `.num_embeddings` and
    `.synthesize(utterances, batch_size)`. With `kmeans_file`, the vocoder must belong to that
    k-means model (codebook size K; the recorded k-means checksum where the dir has one).
    """
    if kmeans_file is not None:
        from sofa_speechlm.vocoder.codebook import check_vocoder_dir

        check_vocoder_dir(vocoder_dir, kmeans_file)
    return VOCODER_KINDS[vocoder_kind(vocoder_dir)](vocoder_dir, device)


@torch.inference_mode()
def synthesize(
    generator: CodeHiFiGANGenerator,
    utterances: dict[str, torch.Tensor],
    batch_size: int = 8,
    speakers: dict[str, int] | None = None,
    deduplicated: bool = False,
) -> Iterator[tuple[str, np.ndarray]]:
    """Yields (utt_id, float32 waveform); `deduplicated` expands each unit by its predicted duration."""
    device = next(generator.parameters()).device
    if generator.spkr is not None and speakers is None:
        raise ValueError("this vocoder is multi-speaker (multispkr): give a speaker id per utterance")
    if deduplicated:
        utterances = {
            utt_id: torch.repeat_interleave(units, generator.predict_durations(units.to(device)).cpu())
            for utt_id, units in utterances.items()
        }
    for batch_ids in equal_length_batches(utterances, batch_size):
        units = torch.stack([utterances[i] for i in batch_ids]).to(device)
        speaker_ids = torch.tensor([speakers[i] for i in batch_ids], device=device) if speakers is not None else None
        audio = generator(units, speaker_ids).float().cpu().numpy()
        yield from zip(batch_ids, audio)


def equal_length_batches(utterances: dict[str, torch.Tensor], batch_size: int) -> Iterator[list[str]]:
    """Utterance ids in batches of at most `batch_size` equally long utterances, longest first."""
    by_length: dict[int, list[str]] = {}
    for utt_id, units in utterances.items():
        by_length.setdefault(len(units), []).append(utt_id)
    for length in sorted(by_length, reverse=True):
        ids = by_length[length]
        for start in range(0, len(ids), batch_size):
            yield ids[start : start + batch_size]
