"""The `units` file of a speech data dir and its de-duplicated form with durations.

    units        uttid u1 u2 ...     k-means ids 0..K-1, one per 20 ms frame (50 Hz)
    units_dedup  uttid v1 v2 ...     runs of repeated ids collapsed to one id
    units_dur    uttid d1 d2 ...     frames each run of units_dedup lasted (sum = len(units))

`read_units` is the one reader of these files (LM text, vocoders, `bin.vocode`, evaluation).
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Sequence

from sofa_speechlm.data import DataDir, DataDirError, read_table, write_table

UNITS_FILE, DEDUP_FILE, DURATION_FILE = "units", "units_dedup", "units_dur"


def deduplicate(units: Sequence[int]) -> tuple[list[int], list[int]]:
    """([v1, v2, ...], [d1, d2, ...]): each run of equal ids becomes one id and its length."""
    runs = [(unit, len(list(group))) for unit, group in itertools.groupby(units)]
    return [unit for unit, _ in runs], [length for _, length in runs]


def expand(units: Sequence[int], durations: Sequence[int]) -> list[int]:
    """Inverse of `deduplicate`."""
    return [unit for unit, length in zip(units, durations) for _ in range(length)]


def parse_units(value: str, where: str, num_embeddings: int | None = None) -> list[int]:
    """Unit ids of one `units` value (`where` names file and utterance in errors); with
    `num_embeddings` (a vocoder's or LM's unit table) every id must lie in [0, num_embeddings)."""
    tokens = value.split()
    if not tokens:
        raise DataDirError(f"{where} has no units")
    try:
        units = [int(token) for token in tokens]
    except ValueError:
        bad = next(token for token in tokens if not token.lstrip("-").isdigit())
        raise DataDirError(f"{where}: unit '{bad}' is not an integer id") from None
    upper = num_embeddings if num_embeddings is not None else float("inf")
    for position, unit in enumerate(units):
        if not 0 <= unit < upper:
            valid = f"[0, {num_embeddings - 1}]" if num_embeddings is not None else "ids >= 0"
            raise DataDirError(f"{where}: unit id {unit} at position {position} is outside {valid}")
    return units


def read_units(source: str | Path | DataDir, name: str = UNITS_FILE, num_embeddings: int | None = None) -> dict[str, list[int]]:
    """uttid -> unit ids, in file order, of a units file, or of the file `name` (units,
    units_dedup, units_dur) in a data dir; `num_embeddings` as in `parse_units`."""
    if isinstance(source, DataDir) or Path(source).is_dir():
        data = source if isinstance(source, DataDir) else DataDir(source)
        if not data.has(name):
            raise DataDirError(f"{data.path}: no {name} file; run stage 2 (speech units) first")
        path = data.path / name
    else:
        path = Path(source)
    table = read_table(path, allow_empty_value=True)
    return {utt_id: parse_units(value, f"{path}: utterance {utt_id}", num_embeddings) for utt_id, value in table.items()}


def expand_by_durations(units: dict[str, list[int]], durations_file: str | Path) -> dict[str, list[int]]:
    """De-duplicated units repeated by their run lengths from a `units_dur` file (`expand` per utterance)."""
    durations = read_units(durations_file)
    expanded = {}
    for utt_id, runs in units.items():
        if utt_id not in durations:
            raise DataDirError(f"{durations_file}: no durations for utterance {utt_id}")
        counts = durations[utt_id]
        if len(counts) != len(runs) or min(counts) < 1:
            raise DataDirError(f"{durations_file}: utterance {utt_id}: expected {len(runs)} durations >= 1, got {len(counts)}")
        expanded[utt_id] = expand(runs, counts)
    return expanded


def write_units(data_dir: str | Path, units: dict[str, Sequence[int]], dedup: bool = False) -> None:
    """Writes `units` (and `units_dedup` + `units_dur` when dedup) into the data dir."""
    data_dir = Path(data_dir)
    write_table(data_dir / UNITS_FILE, {utt_id: " ".join(map(str, ids)) for utt_id, ids in units.items()})
    if dedup:
        runs = {utt_id: deduplicate(ids) for utt_id, ids in units.items()}
        write_table(data_dir / DEDUP_FILE, {utt_id: " ".join(map(str, run[0])) for utt_id, run in runs.items()})
        write_table(data_dir / DURATION_FILE, {utt_id: " ".join(map(str, run[1])) for utt_id, run in runs.items()})
