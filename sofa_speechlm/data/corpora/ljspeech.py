"""LJSpeech-1.1 (`metadata.csv` lines `id|raw text|normalized text`, audio `wavs/<id>.wav` at
22.05 kHz, one speaker). The paper trains its vocoder on it. Its one subset is `all`."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from sofa_speechlm.data.corpora.base import LayoutError, Recording, Report, normalize_text, pair_files


def read_ljspeech(root: Path, subset: str, report: Report, options) -> Iterator[Recording]:
    if subset != "all":
        raise LayoutError(f"{root}: LJSpeech has one subset, 'all'; got '{subset}'")
    metadata = root / "metadata.csv"
    texts = {}
    for number, line in enumerate(metadata.read_text(encoding="utf-8").splitlines(), start=1):
        fields = line.split("|")
        if len(fields) != 3 or not fields[0]:
            raise LayoutError(f"{metadata}:{number}: expected 'id|text|normalized text', got '{line}'")
        text = normalize_text(fields[2] or fields[1], options.text_norm)
        if text:
            texts[fields[0]] = text
        else:
            report.leave_out("empty transcript", f"{metadata}:{number}")
    audio = {path.stem: path for path in (root / "wavs").glob("*.wav")}
    for utt_id, path, text in pair_files(audio, texts, report, str(metadata)):
        yield Recording(utt_id, "LJ", path, text)
