"""What every corpus reader yields and the errors a corpus layout can raise.

A reader walks one subset of a corpus in its published on-disk layout and yields
`Recording`s; it never opens audio (the writer does, once, for every corpus alike).
Problems that concern a single utterance (an orphan transcript, audio without a
transcript) go into the `Report`; a layout that does not match stops with the path.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from sofa_speechlm.data.kaldi import DataDirError


class CorpusNotFound(DataDirError):
    """The corpus (or a requested subset) is not where db.sh says."""


class LayoutError(DataDirError):
    """A file or folder of the corpus does not match the corpus' published layout."""


@dataclass(slots=True)
class Recording:
    """One audio file (None for text-only corpora). `segments` (start, end seconds) or
    `window` (fixed-length pieces, cut once the duration is known) make it several utterances."""

    rec_id: str
    speaker: str
    audio: Path | None
    transcript: str | None = None
    segments: list[tuple[float, float]] | None = None
    window: float | None = None


@dataclass
class Report:
    """Utterances left out of a subset, by reason, so that the log can list and count them."""

    left_out: dict[str, list[str]] = field(default_factory=dict)

    def leave_out(self, reason: str, item: str) -> None:
        self.left_out.setdefault(reason, []).append(item)

    def log(self, subset: str, max_listed: int = 20) -> None:
        for reason, items in sorted(self.left_out.items()):
            logging.warning("%s: %d left out (%s)", subset, len(items), reason)
            for item in items[:max_listed]:
                logging.warning("  %s", item)
            if len(items) > max_listed:
                logging.warning("  ... and %d more", len(items) - max_listed)

    def count(self, reason: str) -> int:
        return len(self.left_out.get(reason, []))


def normalize_text(text: str, mode: str) -> str:
    """`upper`: LibriSpeech's convention (upper case words, no punctuation but apostrophes),
    so that every corpus' transcripts share one BPE vocabulary; `none`: whitespace only."""
    if mode == "none":
        return " ".join(text.split())
    if mode != "upper":
        raise ValueError(f"text normalization '{mode}' is not one of: upper, none")
    text = text.replace("\u2019", "'").replace("-", " ")
    return " ".join(re.sub(r"[^\w' ]|_", " ", text).upper().split())


def pair_files(audio: dict[str, Path], transcripts: dict[str, str], report: Report, where: str) -> list[tuple[str, Path, str]]:
    """(id, audio, transcript) for ids with both; the others are reported as orphans."""
    for key in sorted(set(transcripts) - set(audio)):
        report.leave_out("transcript without audio", f"{where}: {key}")
    for key in sorted(set(audio) - set(transcripts)):
        report.leave_out("audio without transcript", str(audio[key]))
    return [(key, audio[key], transcripts[key]) for key in sorted(set(audio) & set(transcripts))]
