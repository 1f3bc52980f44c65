"""Multilingual LibriSpeech, English (`mls_english[_opus]/<subset>/transcripts.txt` lines
`<spk>_<book>_<seg>\\t<text>`, audio `<subset>/audio/<spk>/<book>/<id>.flac` or `.opus`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

from sofa_speechlm.data.corpora.base import LayoutError, Recording, Report, normalize_text, pair_files

AUDIO_SUFFIXES = (".flac", ".opus")


def read_mls(root: Path, subset: str, report: Report, options) -> Iterator[Recording]:
    transcripts = root / subset / "transcripts.txt"
    if not transcripts.is_file():
        raise LayoutError(f"{transcripts}: not found (expected MLS {subset}/transcripts.txt and {subset}/audio/<speaker>/<book>/<id>.flac)")
    texts = {}
    for number, line in enumerate(transcripts.read_text(encoding="utf-8").splitlines(), start=1):
        utt_id, _, words = line.partition("\t")
        if not re.fullmatch(r"\d+_\d+_\d+", utt_id) or not words.strip():
            raise LayoutError(f"{transcripts}:{number}: expected '<speaker>_<book>_<segment>\\tTRANSCRIPT', got '{line}'")
        texts[utt_id] = normalize_text(words, options.text_norm)
    audio = {path.stem: path for path in (root / subset / "audio").glob("*/*/*") if path.suffix in AUDIO_SUFFIXES}
    for utt_id, path, text in pair_files(audio, texts, report, str(transcripts)):
        yield Recording(utt_id, utt_id.split("_")[0], path, text)
