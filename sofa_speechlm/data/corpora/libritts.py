"""LibriTTS and LibriTTS-R (`LibriTTS/<subset>/<speaker>/<chapter>/<id>.wav` at 24 kHz with
`<id>.normalized.txt` beside each wav)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from sofa_speechlm.data.corpora.base import LayoutError, Recording, Report, normalize_text, pair_files

TEXT_SUFFIX = ".normalized.txt"


def read_libritts(root: Path, subset: str, report: Report, options) -> Iterator[Recording]:
    base = root / subset
    chapters = sorted({path.parent for pattern in ("*/*/*.wav", f"*/*/*{TEXT_SUFFIX}") for path in base.glob(pattern)})
    if not chapters:
        raise LayoutError(f"{base}: no LibriTTS subset here (expected {subset}/<speaker>/<chapter>/<speaker>_<chapter>_<n>_<m>.wav with .normalized.txt)")
    for chapter in chapters:
        speaker = chapter.parent.name
        audio = {path.stem: path for path in chapter.glob("*.wav")}
        texts = {}
        for path in chapter.glob(f"*{TEXT_SUFFIX}"):
            utt_id = path.name[: -len(TEXT_SUFFIX)]
            if not utt_id.startswith(f"{speaker}_"):
                raise LayoutError(f"{path}: expected a name {speaker}_<chapter>_<n>_<m>{TEXT_SUFFIX} in speaker folder {speaker}")
            text = normalize_text(path.read_text(encoding="utf-8"), options.text_norm)
            if text:
                texts[utt_id] = text
            else:
                report.leave_out("empty transcript", str(path))
                audio.pop(utt_id, None)
        for utt_id, path, text in pair_files(audio, texts, report, str(chapter)):
            yield Recording(utt_id, speaker, path, text)
