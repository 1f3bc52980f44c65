"""The embedded mini corpus: English prose spoken by espeak-ng voices, made offline.

Sentences are assigned to train/dev/test once (no sentence in two splits); every sentence
of a split is textLM data and the first ones of each split are also spoken, by voices used
as speakers. Same sentences, seed and espeak-ng build give byte-identical output.
"""

from __future__ import annotations

import hashlib
import io
import random
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr
from tqdm import tqdm

from sofa_speechlm.data.ops import SPEECH_TASKS, SPLITS, staged_data_dirs, write_data_dir

# speaker id -> (espeak-ng voice+variant, words per minute, pitch 0-99)
SPEAKERS = {
    "cb_m2": ("en-029+m2", 165, 45),
    "gb_f3": ("en-gb+f3", 160, 60),
    "gb_m1": ("en-gb+m1", 170, 40),
    "rp_m4": ("en-gb-x-rp+m4", 155, 50),
    "sc_f4": ("en-gb-scotland+f4", 165, 55),
    "us_f2": ("en-us+f2", 175, 65),
    "us_m3": ("en-us+m3", 160, 35),
    "wm_f1": ("en-gb-x-gbcwmd+f1", 150, 58),
}


class CorpusError(RuntimeError):
    """The mini corpus cannot be made (missing tool, bad sentence list, failed synthesis)."""


@dataclass(frozen=True)
class Utterance:
    utt_id: str
    speaker: str
    sentence: str
    split: str


def normalize_transcript(sentence: str) -> str:
    """LibriSpeech-style transcript: upper case words, no punctuation but apostrophes."""
    words = re.sub(r"[^A-Za-z' ]", " ", sentence.replace("-", " ")).upper().split()
    return " ".join(words)


def read_sentences(path: str | Path) -> list[str]:
    lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    sentences = sorted({line for line in lines if line})
    if not sentences:
        raise CorpusError(f"{path}: no sentences")
    return sentences


def plan_corpus(sentences: list[str], seed: int, num_text: int, num_spoken: int, held_out_fraction: float = 0.1) -> tuple[list[Utterance], list[Utterance]]:
    """Returns (text utterances, spoken utterances); dev and test get `held_out_fraction` each."""
    if num_text > len(sentences):
        raise CorpusError(f"asked for {num_text} textLM sentences, the sentence list has {len(sentences)}")
    if num_spoken > num_text:
        raise CorpusError(f"--num_spoken {num_spoken} exceeds --num_text {num_text}: spoken sentences are a subset")
    chosen = random.Random(seed).sample(sentences, num_text)
    held_out = max(1, round(num_text * held_out_fraction))
    spoken_held_out = max(1, round(num_spoken * held_out_fraction))
    bounds = {"dev": (0, held_out), "test": (held_out, 2 * held_out), "train": (2 * held_out, num_text)}
    spoken_counts = {"dev": spoken_held_out, "test": spoken_held_out, "train": num_spoken - 2 * spoken_held_out}
    speakers = sorted(SPEAKERS)
    text_utts, spoken_utts = [], []
    for split in SPLITS:
        begin, end = bounds[split]
        for offset, sentence in enumerate(chosen[begin:end]):
            index = begin + offset
            text_utts.append(Utterance(f"text-{split}-{index:05d}", f"text-{split}-{index:05d}", sentence, split))
            if offset < spoken_counts[split]:
                speaker = speakers[index % len(speakers)]
                spoken_utts.append(Utterance(f"{speaker}-{index:05d}", speaker, sentence, split))
    return text_utts, spoken_utts


def synthesize(utterance: Utterance, wav_path: Path, fs: int) -> int:
    """Speaks one sentence into a 16-bit wav at `fs`; returns its number of samples.

    An existing wav (from an interrupted run) is reused; wavs appear atomically.
    """
    if wav_path.is_file():
        return soundfile.info(str(wav_path)).frames
    voice, speed, pitch = SPEAKERS[utterance.speaker]
    command = ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "--stdout", utterance.sentence]
    result = subprocess.run(command, capture_output=True)
    if result.returncode != 0 or not result.stdout:
        raise CorpusError(f"espeak-ng failed for {utterance.utt_id} ({' '.join(command[:7])}): {result.stderr.decode(errors='replace').strip()}")
    waveform, rate = soundfile.read(io.BytesIO(result.stdout), dtype="float32")
    if rate != fs:
        waveform = soxr.resample(waveform, rate, fs, quality="HQ")
    waveform = np.clip(waveform, -1.0, 1.0)
    wav_path.parent.mkdir(parents=True, exist_ok=True)
    partial = wav_path.with_suffix(".partial.wav")
    soundfile.write(str(partial), waveform, fs, subtype="PCM_16")
    partial.replace(wav_path)
    return len(waveform)


def make_mini_corpus(sentences_path: str | Path, datadir: str | Path, seed: int, fs: int, num_text: int, num_spoken: int, nj: int = 1) -> None:
    """Writes datadir/{train,dev,test}/{textlm,speechlm,asr,tts}.

    Outputs are staged and validated before they replace the data dirs, so a failure
    leaves earlier outputs as they were.
    """
    if shutil.which("espeak-ng") is None:
        raise CorpusError("espeak-ng is not installed; run as root: apt-get update && apt-get install -y espeak-ng")
    datadir = Path(datadir).resolve()
    text_utts, spoken_utts = plan_corpus(read_sentences(sentences_path), seed, num_text, num_spoken)
    wav_dir = datadir / "local" / "mini_corpus" / f"wav{fs}"

    def job(utterance: Utterance) -> tuple[str, tuple[Path, int]]:
        # The name carries a digest of what is spoken, so a rerun with another seed never
        # reuses a wav made for a different sentence under the same utterance id.
        digest = hashlib.sha1(repr((SPEAKERS[utterance.speaker], utterance.sentence)).encode()).hexdigest()[:10]
        path = wav_dir / utterance.speaker / f"{utterance.utt_id}-{digest}.wav"
        return utterance.utt_id, (path, synthesize(utterance, path, fs))

    with ThreadPoolExecutor(max_workers=max(1, nj)) as pool:
        progress = tqdm(pool.map(job, spoken_utts), total=len(spoken_utts), desc="espeak-ng", unit="utt", mininterval=5)
        wavs = dict(progress)

    with staged_data_dirs(datadir, fs) as staging:
        for split in SPLITS:
            write_data_dir(staging / split / "textlm", {u.utt_id: u.speaker for u in text_utts if u.split == split}, text={u.utt_id: normalize_transcript(u.sentence) for u in text_utts if u.split == split})
            spoken = [u for u in spoken_utts if u.split == split]
            for task in SPEECH_TASKS:
                write_data_dir(
                    staging / split / task,
                    {u.utt_id: u.speaker for u in spoken},
                    text={u.utt_id: normalize_transcript(u.sentence) for u in spoken} if task != "speechlm" else None,
                    wav_scp={u.utt_id: str(wavs[u.utt_id][0]) for u in spoken},
                    num_samples={u.utt_id: wavs[u.utt_id][1] for u in spoken},
                )
