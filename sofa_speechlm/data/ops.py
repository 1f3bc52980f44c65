"""Data dir operations: subset, split into parts, combine, and fix (sort and intersect).

All of them keep every per-utterance file (wav.scp, text, utt2spk, segments, units, ...)
consistent and regenerate spk2utt, so their output passes validation.
"""

from __future__ import annotations

import random
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sofa_speechlm.data.kaldi import PER_UTTERANCE_FILES, DataDir, DataDirError, read_table, sort_key, spk2utt_from_utt2spk, write_table
from sofa_speechlm.data.validate import validate_data_dir

SPLITS = ("train", "dev", "test")
SPEECH_TASKS = ("speechlm", "asr", "tts")
# Files each task's data dir must have besides utt2spk and spk2utt.
TASK_FILES = {"textlm": ("text",), "speechlm": ("wav.scp",), "asr": ("wav.scp", "text"), "tts": ("wav.scp", "text")}


def _present_tables(data_dir: DataDir) -> dict[str, dict[str, str]]:
    return {name: data_dir.require(name) for name in PER_UTTERANCE_FILES if data_dir.has(name)}


def _write_subset(tables: dict[str, dict[str, str]], utt_ids: list[str], destination: Path) -> None:
    wanted = set(utt_ids)
    destination.mkdir(parents=True, exist_ok=True)
    segments = tables.get("segments")
    recordings = {value.split()[0] for key, value in segments.items() if key in wanted} if segments else None
    for name, table in tables.items():
        keep = recordings if (name == "wav.scp" and recordings is not None) else wanted
        write_table(destination / name, {key: value for key, value in table.items() if key in keep})
    utt2spk = {key: value for key, value in tables["utt2spk"].items() if key in wanted}
    write_table(destination / "spk2utt", spk2utt_from_utt2spk(utt2spk))


def subset_data_dir(source: str | Path, destination: str | Path, utt_ids: list[str]) -> None:
    """Copies the utterances `utt_ids` of `source` into `destination`."""
    data_dir = DataDir(source)
    known = set(data_dir.utt2spk)
    unknown = [utt_id for utt_id in utt_ids if utt_id not in known]
    if unknown:
        raise DataDirError(f"{data_dir.path}: {len(unknown)} requested utterances are not in utt2spk, e.g. {unknown[0]}")
    _write_subset(_present_tables(data_dir), utt_ids, Path(destination))


def choose_utterances(source: str | Path, first: int = 0, last: int = 0, random_count: int = 0, seed: int = 0, utt_list: str | None = None) -> list[str]:
    """Utterance ids chosen by exactly one rule: the first N, the last N, N at random, or a list file."""
    utt_ids = DataDir(source).utt_ids
    rules = [bool(first), bool(last), bool(random_count), utt_list is not None]
    if sum(rules) != 1:
        raise ValueError("choose exactly one of --first, --last, --random or --utt_list")
    if utt_list is not None:
        return list(read_table(utt_list, allow_empty_value=True))
    count = first or last or random_count
    if count > len(utt_ids):
        raise ValueError(f"{source}: asked for {count} utterances, it has {len(utt_ids)}")
    if first:
        return utt_ids[:first]
    if last:
        return utt_ids[-last:]
    return sorted(random.Random(seed).sample(utt_ids, random_count), key=sort_key)


def split_data_dir(source: str | Path, parts: int, per_speaker: bool = False) -> list[Path]:
    """Splits into `source/split{parts}/{1..parts}` of near-equal size (whole speakers with per_speaker)."""
    data_dir = DataDir(source)
    utt2spk = data_dir.utt2spk
    groups: list[list[str]]
    if per_speaker:
        by_speaker: dict[str, list[str]] = {}
        for utt_id, speaker in utt2spk.items():
            by_speaker.setdefault(speaker, []).append(utt_id)
        groups = [by_speaker[speaker] for speaker in sorted(by_speaker, key=sort_key)]
    else:
        groups = [[utt_id] for utt_id in utt2spk]
    if parts < 1 or parts > len(groups):
        unit = "speakers" if per_speaker else "utterances"
        raise ValueError(f"{data_dir.path}: cannot split {len(groups)} {unit} into {parts} parts")
    tables = _present_tables(data_dir)
    outputs = []
    for index in range(parts):
        begin, end = index * len(groups) // parts, (index + 1) * len(groups) // parts
        output = data_dir.path / f"split{parts}" / str(index + 1)
        _write_subset(tables, [utt_id for group in groups[begin:end] for utt_id in group], output)
        outputs.append(output)
    return outputs


def combine_data_dirs(destination: str | Path, sources: list[str | Path]) -> None:
    """Union of data dirs; an id present in two sources with different content is an error."""
    combined: dict[str, dict[str, str]] = {}
    names = None
    for source in sources:
        tables = _present_tables(DataDir(source))
        if names is None:
            names = set(tables)
        elif set(tables) != names:
            raise DataDirError(f"{source}: has files {sorted(tables)}, the first source has {sorted(names)}")
        for name, table in tables.items():
            target = combined.setdefault(name, {})
            for key, value in table.items():
                if target.get(key, value) != value:
                    raise DataDirError(f"{Path(source) / name}: id {key} differs from an earlier source")
                target[key] = value
    if not combined:
        raise DataDirError("combine: no source data dirs given")
    _write_subset(combined, list(combined["utt2spk"]), Path(destination))


def fix_data_dir(path: str | Path) -> int:
    """Sorts every file and keeps the utterances present in all of them; returns how many were dropped.

    The original files are kept in `path/.backup`.
    """
    data_dir = Path(path)
    tables = {}
    for name in PER_UTTERANCE_FILES:
        if (data_dir / name).is_file():
            rows = {}
            for line in (data_dir / name).read_text(encoding="utf-8").splitlines():
                parts = line.strip().split(maxsplit=1)
                if len(parts) == 2 and parts[0] not in rows:
                    rows[parts[0]] = parts[1]
            tables[name] = rows
    if "utt2spk" not in tables:
        raise DataDirError(f"{data_dir}: required file utt2spk is missing")
    keyed = [name for name in tables if not (name == "wav.scp" and "segments" in tables)]
    keep = set.intersection(*(set(tables[name]) for name in keyed))
    backup = data_dir / ".backup"
    backup.mkdir(exist_ok=True)
    for name in (*tables, "spk2utt"):
        if (data_dir / name).is_file():
            shutil.copy2(data_dir / name, backup / name)
    _write_subset(tables, sorted(keep, key=sort_key), data_dir)
    return len(tables["utt2spk"]) - len(keep)


def write_data_dir(directory: Path, utt2spk: dict[str, str], text: dict[str, str] | None = None, wav_scp: dict[str, str] | None = None, num_samples: dict[str, int] | None = None) -> None:
    """Writes a data dir from its tables (spk2utt derived from utt2spk)."""
    write_table(directory / "utt2spk", utt2spk)
    write_table(directory / "spk2utt", spk2utt_from_utt2spk(utt2spk))
    if text is not None:
        write_table(directory / "text", text)
    if wav_scp is not None:
        write_table(directory / "wav.scp", wav_scp)
    if num_samples is not None:
        write_table(directory / "utt2num_samples", {key: str(value) for key, value in num_samples.items()})


@contextmanager
def staged_data_dirs(datadir: str | Path, fs: int) -> Iterator[Path]:
    """Yields a staging root for `{split}/{task}` data dirs; on success validates all of
    them and only then moves them over `datadir`, so a failure leaves earlier data dirs as
    they were. The staging folder never outlives the call.
    """
    datadir = Path(datadir)
    staging = datadir / ".staging"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        yield staging
        problems = [problem for split in SPLITS for task, required in TASK_FILES.items() for problem in validate_data_dir(staging / split / task, fs=fs, require=required)]
        if problems:
            raise DataDirError("the prepared data dirs are invalid:\n  " + "\n  ".join(problems[:20]))
        for split in SPLITS:
            for task in TASK_FILES:
                target = datadir / split / task
                shutil.rmtree(target, ignore_errors=True)
                target.parent.mkdir(parents=True, exist_ok=True)
                (staging / split / task).replace(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
