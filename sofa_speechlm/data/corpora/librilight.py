"""Libri-Light unlabelled audio (`<subset>/<speaker>/<book>/<name>.flac` with `<name>.json`
beside it; subsets small, medium, large). Recordings run up to an hour, so they are cut
into utterances: the json's voice-activity intervals merged up to `segment_length`
seconds (`segment_method=vad`), or fixed windows of that length (`fixed`)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterator

from sofa_speechlm.data.corpora.base import LayoutError, Recording, Report


def merge_voice_activity(intervals: list[tuple[float, float]], max_length: float) -> list[tuple[float, float]]:
    """Consecutive speech intervals joined while the chunk stays within max_length;
    an interval longer than that is cut into max_length pieces."""
    chunks: list[tuple[float, float]] = []
    for start, end in intervals:
        if end <= start:
            continue
        if chunks and end - chunks[-1][0] <= max_length:
            chunks[-1] = (chunks[-1][0], end)
            continue
        while end - start > max_length:
            chunks.append((start, start + max_length))
            start += max_length
        chunks.append((start, end))
    return chunks


def _voice_activity(path: Path, report: Report) -> list[tuple[float, float]] | None:
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        report.leave_out("unreadable json", f"{path}: {error}")
        return None
    if "voice_activity" not in meta:
        raise LayoutError(f"{path}: no 'voice_activity' key (expected Libri-Light's per-file json)")
    try:
        return [(float(start), float(end)) for start, end in meta["voice_activity"]]
    except (TypeError, ValueError):
        raise LayoutError(f"{path}: 'voice_activity' is not a list of [start, end] seconds") from None


def read_librilight(root: Path, subset: str, report: Report, options) -> Iterator[Recording]:
    base = root / subset
    files = sorted(base.glob("*/*/*.flac"))
    if not files:
        raise LayoutError(f"{base}: no Libri-Light subset here (expected {subset}/<speaker>/<book>/<name>.flac with <name>.json)")
    for path in files:
        speaker, book = path.parent.parent.name, path.parent.name
        rec_id = re.sub(r"[^A-Za-z0-9_-]", "_", f"{speaker}-{book}-{path.stem}")
        if options.segment_method == "fixed":
            yield Recording(rec_id, speaker, path, window=options.segment_length)
            continue
        meta = path.with_suffix(".json")
        if not meta.is_file():
            report.leave_out("audio without its json", str(path))
            continue
        intervals = _voice_activity(meta, report)
        if intervals is not None:
            yield Recording(rec_id, speaker, path, segments=merge_voice_activity(intervals, options.segment_length))
