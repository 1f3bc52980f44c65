"""VCTK: 0.92 (`wav48_silence_trimmed/<spk>/<spk>_<n>_mic1.flac`) or 0.80 (`wav48/<spk>/<spk>_<n>.wav`),
transcripts in `txt/<spk>/<spk>_<n>.txt`. The corpus has no subsets: its one subset is `all`."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from sofa_speechlm.data.corpora.base import LayoutError, Recording, Report, normalize_text, pair_files


def _audio_files(root: Path, mic: str) -> dict[str, Path]:
    if (root / "wav48_silence_trimmed").is_dir():
        suffix = f"_{mic}.flac"
        return {path.name[: -len(suffix)]: path for path in (root / "wav48_silence_trimmed").glob(f"*/*{suffix}")}
    if (root / "wav48").is_dir():
        return {path.stem: path for path in (root / "wav48").glob("*/*.wav")}
    raise LayoutError(f"{root}: neither wav48_silence_trimmed/ (VCTK 0.92) nor wav48/ (VCTK 0.80) is here")


def read_vctk(root: Path, subset: str, report: Report, options) -> Iterator[Recording]:
    if subset != "all":
        raise LayoutError(f"{root}: VCTK has one subset, 'all'; got '{subset}'")
    audio = _audio_files(root, options.vctk_mic)
    texts = {}
    for path in sorted((root / "txt").glob("*/*.txt")):
        text = normalize_text(path.read_text(encoding="utf-8", errors="replace"), options.text_norm)
        if text:
            texts[path.stem] = text
        else:
            report.leave_out("empty transcript", str(path))
    if not audio and not texts:
        raise LayoutError(f"{root}: no VCTK audio or txt/<speaker>/<speaker>_<n>.txt here")
    for utt_id, path, text in pair_files(audio, texts, report, str(root / "txt")):
        yield Recording(utt_id, utt_id.split("_")[0], path, text)
