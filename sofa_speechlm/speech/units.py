"""The `units` file of a speech data dir and its de-duplicated form with durations.

    units        uttid u1 u2 ...     k-means ids 0..K-1, one per 20 ms frame (50 Hz)
    units_dedup  uttid v1 v2 ...     runs of repeated ids collapsed to one id
    units_dur    uttid d1 d2 ...     frames each run of units_dedup lasted (sum = len(units))
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Sequence

from sofa_speechlm.data import DataDir, DataDirError, write_table

UNITS_FILE, DEDUP_FILE, DURATION_FILE = "units", "units_dedup", "units_dur"


def deduplicate(units: Sequence[int]) -> tuple[list[int], list[int]]:
    """([v1, v2, ...], [d1, d2, ...]): each run of equal ids becomes one id and its length."""
    runs = [(unit, len(list(group))) for unit, group in itertools.groupby(units)]
    return [unit for unit, _ in runs], [length for _, length in runs]


def expand(units: Sequence[int], durations: Sequence[int]) -> list[int]:
    """Inverse of `deduplicate`."""
    return [unit for unit, length in zip(units, durations) for _ in range(length)]


def parse_units(value: str, where: str) -> list[int]:
    try:
        units = [int(token) for token in value.split()]
    except ValueError:
        raise DataDirError(f"{where}: expected integer unit ids, got '{value[:60]}'") from None
    if any(unit < 0 for unit in units):
        raise DataDirError(f"{where}: negative unit id in '{value[:60]}'")
    return units


def read_units(data_dir: str | Path | DataDir, name: str = UNITS_FILE) -> dict[str, list[int]]:
    """uttid -> unit ids from the data dir's `units` (or `units_dedup`) file."""
    data = data_dir if isinstance(data_dir, DataDir) else DataDir(data_dir)
    if not data.has(name):
        raise DataDirError(f"{data.path}: no {name} file; run stage 2 (speech units) first")
    table = data.table(name)
    return {utt_id: parse_units(value, f"{data.path / name} ({utt_id})") for utt_id, value in table.items()}


def write_units(data_dir: str | Path, units: dict[str, Sequence[int]], dedup: bool = False) -> None:
    """Writes `units` (and `units_dedup` + `units_dur` when dedup) into the data dir."""
    data_dir = Path(data_dir)
    write_table(data_dir / UNITS_FILE, {utt_id: " ".join(map(str, ids)) for utt_id, ids in units.items()})
    if dedup:
        runs = {utt_id: deduplicate(ids) for utt_id, ids in units.items()}
        write_table(data_dir / DEDUP_FILE, {utt_id: " ".join(map(str, run[0])) for utt_id, run in runs.items()})
        write_table(data_dir / DURATION_FILE, {utt_id: " ".join(map(str, run[1])) for utt_id, run in runs.items()})
