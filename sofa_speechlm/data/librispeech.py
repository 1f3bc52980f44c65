"""LibriSpeech as the SpeechLM recipe's data dirs.

Speech dirs come from the corpus' subsets (`<subset>/<speaker>/<chapter>/*.trans.txt` and
flac files); textLM data from the LibriSpeech LM corpus (librispeech-lm-norm.txt) for
train when given, else from the transcripts, and from the dev/test transcripts.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Iterator, NamedTuple

import soundfile
from tqdm import tqdm

from sofa_speechlm.data.kaldi import DataDirError
from sofa_speechlm.data.ops import SPEECH_TASKS, staged_data_dirs, write_data_dir


class Utterance(NamedTuple):
    utt_id: str
    speaker: str
    audio: Path
    transcript: str


def read_subset(corpus_dir: str | Path, subset: str) -> Iterator[Utterance]:
    root = Path(corpus_dir) / subset
    transcripts = sorted(root.glob("*/*/*.trans.txt"))
    if not transcripts:
        raise DataDirError(f"{root}: no LibriSpeech subset here (expected {subset}/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt)")
    for transcript_file in transcripts:
        for number, line in enumerate(transcript_file.read_text(encoding="utf-8").splitlines(), start=1):
            utt_id, _, words = line.strip().partition(" ")
            if not words.strip():
                raise DataDirError(f"{transcript_file}:{number}: expected 'uttid TRANSCRIPT', got '{line.strip()}'")
            audio = transcript_file.parent / f"{utt_id}.flac"
            if not audio.is_file():
                raise DataDirError(f"{transcript_file}:{number}: audio {audio} not found")
            yield Utterance(utt_id, utt_id.split("-")[0], audio, " ".join(words.split()))


def sample_lines(path: str | Path, count: int, seed: int) -> list[str]:
    """`count` lines of a (possibly huge) text file by reservoir sampling; all when count is 0."""
    chosen: list[str] = []
    generator = random.Random(seed)
    with open(path, encoding="utf-8") as stream:
        for index, line in enumerate(stream):
            line = " ".join(line.split())
            if not line:
                continue
            if not count or len(chosen) < count:
                chosen.append(line)
            elif (slot := generator.randint(0, index)) < count:
                chosen[slot] = line
    if not chosen:
        raise DataDirError(f"{path}: no text lines")
    return chosen


def prepare_librispeech(corpus_dir: str | Path, datadir: str | Path, fs: int, train_sets: list[str], dev_set: str, test_set: str, lm_text: str | None = None, num_lm_sentences: int = 0, seed: int = 0) -> None:
    """Writes datadir/{train,dev,test}/{textlm,speechlm,asr,tts} (staged, validated, then moved)."""
    subsets = {"train": train_sets, "dev": [dev_set], "test": [test_set]}
    with staged_data_dirs(datadir, fs) as staging:
        for split, names in subsets.items():
            utterances = [utterance for name in names for utterance in read_subset(corpus_dir, name)]
            utt2spk = {u.utt_id: u.speaker for u in utterances}
            text = {u.utt_id: u.transcript for u in utterances}
            lengths = {u.utt_id: soundfile.info(str(u.audio)).frames for u in tqdm(utterances, desc=f"{split} audio headers", mininterval=10)}
            for task in SPEECH_TASKS:
                write_data_dir(staging / split / task, utt2spk, text=None if task == "speechlm" else text, wav_scp={u.utt_id: str(u.audio.resolve()) for u in utterances}, num_samples=lengths)
            if split == "train" and lm_text:
                sentences = sample_lines(lm_text, num_lm_sentences, seed)
                ids = [f"lm-{index:08d}" for index in range(len(sentences))]
                write_data_dir(staging / split / "textlm", dict(zip(ids, ids)), text=dict(zip(ids, sentences)))
            else:
                write_data_dir(staging / split / "textlm", {utt_id: utt_id for utt_id in text}, text=text)
