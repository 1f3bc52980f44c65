"""Reading the audio a wav.scp entry points to: a file path or a `command |` pipe."""

from __future__ import annotations

import io
import logging
import subprocess
from pathlib import Path
from typing import Iterator

import numpy as np
import soundfile
import soxr

from sofa_speechlm.data.kaldi import DataDir, DataDirError


class AudioError(ValueError):
    """Audio that cannot be read, is empty, or is not what the recipe expects."""


def _read_source(entry: str) -> tuple[np.ndarray, int]:
    entry = entry.strip()
    if entry.endswith("|"):
        command = entry[:-1].strip()
        result = subprocess.run(command, shell=True, capture_output=True)
        if result.returncode != 0:
            message = result.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or [""]
            raise AudioError(f"command '{command}' failed with status {result.returncode}: {message[0]}")
        source: io.BytesIO | str = io.BytesIO(result.stdout)
    else:
        if not Path(entry).is_file():
            raise AudioError(f"{entry}: audio file not found")
        source = entry
    try:
        waveform, rate = soundfile.read(source, dtype="float32", always_2d=True)
    except (RuntimeError, soundfile.LibsndfileError) as error:
        raise AudioError(f"{entry}: unreadable audio ({error})") from None
    if waveform.shape[1] > 1:
        note_mixdown(entry, waveform.shape[1])
    return waveform.mean(axis=1), rate


_mixed_down = {"sources": 0}  # multichannel sources read by this process


def note_mixdown(entry: str, channels: int) -> None:
    """Logs that multichannel audio is averaged to mono: the first source, then every 1000th."""
    _mixed_down["sources"] += 1
    if _mixed_down["sources"] % 1000 == 1:
        logging.warning("%s: %d channels mixed down to mono (their mean); %d multichannel source(s) so far",
                        entry, channels, _mixed_down["sources"])


def audio_info(entry: str) -> tuple[int, int]:
    """(sampling rate, number of samples) of a wav.scp entry, reading headers only for files."""
    entry = entry.strip()
    if not entry.endswith("|") and Path(entry).is_file():
        try:
            info = soundfile.info(entry)
        except (RuntimeError, soundfile.LibsndfileError) as error:
            raise AudioError(f"{entry}: unreadable audio ({error})") from None
        return int(info.samplerate), int(info.frames)
    waveform, rate = _read_source(entry)
    return rate, len(waveform)


def load_audio(entry: str, fs: int) -> np.ndarray:
    """Mono float32 waveform at `fs` Hz (resampled when the source differs)."""
    waveform, rate = _read_source(entry)
    if waveform.size == 0:
        raise AudioError(f"{entry}: empty audio")
    if rate != fs:
        waveform = soxr.resample(waveform, rate, fs, quality="HQ").astype(np.float32)
    return waveform


def iter_utterances(data_dir: str | Path | DataDir, fs: int, utt_ids: list[str] | None = None) -> Iterator[tuple[str, np.ndarray]]:
    """Yields (utt_id, waveform at fs) for a data dir, cutting `segments` out of recordings.

    A recording shared by consecutive segments is read once.
    """
    data_dir = data_dir if isinstance(data_dir, DataDir) else DataDir(data_dir)
    wav_scp = data_dir.require("wav.scp")
    segments = data_dir.segments
    ids = utt_ids if utt_ids is not None else list(segments or wav_scp)
    cached_recording, cached_waveform = None, None
    for utt_id in ids:
        if segments is None:
            if utt_id not in wav_scp:
                raise DataDirError(f"{data_dir.path / 'wav.scp'}: no entry for utterance {utt_id}")
            yield utt_id, load_audio(wav_scp[utt_id], fs)
            continue
        if utt_id not in segments:
            raise DataDirError(f"{data_dir.path / 'segments'}: no entry for utterance {utt_id}")
        recording, start, end = segments[utt_id]
        if recording != cached_recording:
            if recording not in wav_scp:
                raise DataDirError(f"{data_dir.path / 'wav.scp'}: no entry for recording {recording} (segments, {utt_id})")
            cached_recording, cached_waveform = recording, load_audio(wav_scp[recording], fs)
        piece = cached_waveform[int(round(start * fs)) : int(round(end * fs))]
        if piece.size == 0:
            raise AudioError(f"{utt_id}: segment {start}-{end} s lies outside recording {recording}")
        yield utt_id, piece
