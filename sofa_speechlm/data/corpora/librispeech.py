"""LibriSpeech (`LibriSpeech/<subset>/<speaker>/<chapter>/`, flac + `<speaker>-<chapter>.trans.txt`)
and its LM corpus (`LibriSpeech/librispeech-lm-norm.txt[.gz]`, one normalized sentence a line)."""

from __future__ import annotations

import gzip
import random
import re
from pathlib import Path
from typing import Iterator

from sofa_speechlm.data.corpora.base import CorpusNotFound, LayoutError, Recording, Report, normalize_text, pair_files

LM_TEXT_NAMES = ("librispeech-lm-norm.txt", "librispeech-lm-norm.txt.gz")


def read_librispeech(root: Path, subset: str, report: Report, options) -> Iterator[Recording]:
    base = root / subset
    transcripts = sorted(base.glob("*/*/*.trans.txt"))
    if not transcripts:
        raise LayoutError(f"{base}: no LibriSpeech subset here (expected {subset}/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt)")
    for transcript_file in transcripts:
        speaker, chapter = transcript_file.parent.parent.name, transcript_file.parent.name
        if transcript_file.name != f"{speaker}-{chapter}.trans.txt":
            raise LayoutError(f"{transcript_file}: expected {speaker}-{chapter}.trans.txt in {speaker}/{chapter}/")
        texts = {}
        for number, line in enumerate(transcript_file.read_text(encoding="utf-8").splitlines(), start=1):
            utt_id, _, words = line.strip().partition(" ")
            if not re.fullmatch(rf"{re.escape(speaker)}-{re.escape(chapter)}-\d+", utt_id) or not words.strip():
                raise LayoutError(f"{transcript_file}:{number}: expected '{speaker}-{chapter}-NNNN TRANSCRIPT', got '{line.strip()}'")
            texts[utt_id] = normalize_text(words, options.text_norm)
        audio = {path.name[: -len(".flac")]: path for path in transcript_file.parent.glob("*.flac")}
        for utt_id, path, text in pair_files(audio, texts, report, str(transcript_file)):
            yield Recording(utt_id, speaker, path, text)


def find_lm_text(root: Path) -> Path:
    if root.is_file():
        return root
    for name in LM_TEXT_NAMES:
        if (root / name).is_file():
            return root / name
    raise CorpusNotFound(f"{root}: no {' or '.join(LM_TEXT_NAMES)} here")


def _open_text(path: Path):
    return gzip.open(path, "rt", encoding="utf-8") if path.suffix == ".gz" else open(path, encoding="utf-8")


def read_lm_text(root: Path, subset: str, report: Report, options) -> Iterator[Recording]:
    """`options.num_sentences` sentences by reservoir sampling with `options.seed` (all when 0)."""
    path = find_lm_text(root)
    count, chosen = options.num_sentences, []
    generator = random.Random(options.seed)
    with _open_text(path) as stream:
        for index, line in enumerate(stream):
            line = normalize_text(line, options.text_norm)
            if not line:
                continue
            if not count or len(chosen) < count:
                chosen.append(line)
            elif (slot := generator.randint(0, index)) < count:
                chosen[slot] = line
    if not chosen:
        raise LayoutError(f"{path}: no text lines")
    for index, sentence in enumerate(chosen):
        utt_id = f"lm-{index:08d}"
        yield Recording(utt_id, utt_id, None, sentence)
