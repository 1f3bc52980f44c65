"""Reading `uttid u1 u2 ...` unit lines with errors that name the utterance."""

from __future__ import annotations

from pathlib import Path

import torch

from sofa_speechlm.data.kaldi import DataDirError, read_table


def parse_units(utt_id: str, value: str, num_embeddings: int, source: str = "units") -> torch.Tensor:
    """Unit ids of one utterance as a LongTensor; every id must lie in [0, num_embeddings)."""
    tokens = value.split()
    if not tokens:
        raise DataDirError(f"{source}: utterance {utt_id} has no units")
    try:
        ids = [int(token) for token in tokens]
    except ValueError:
        bad = next(token for token in tokens if not token.lstrip("-").isdigit())
        raise DataDirError(f"{source}: utterance {utt_id}: unit '{bad}' is not an integer id") from None
    units = torch.tensor(ids, dtype=torch.long)
    out_of_range = (units < 0) | (units >= num_embeddings)
    if out_of_range.any():
        position = int(out_of_range.nonzero()[0])
        raise DataDirError(
            f"{source}: utterance {utt_id}: unit id {ids[position]} at position {position} is outside the "
            f"vocoder's embedding table [0, {num_embeddings - 1}]"
        )
    return units


def read_units(path: str | Path, num_embeddings: int) -> dict[str, torch.Tensor]:
    """All utterances of a units file, in file order."""
    table = read_table(path, allow_empty_value=True)
    return {utt_id: parse_units(utt_id, value, num_embeddings, str(path)) for utt_id, value in table.items()}


def expand_by_durations(units: dict[str, torch.Tensor], path: str | Path) -> dict[str, torch.Tensor]:
    """Repeats each de-duplicated unit by its run length from a `uttid d1 d2 ...` file (stage 2a's units_dur)."""
    durations = read_table(path)
    expanded = {}
    for utt_id, runs in units.items():
        if utt_id not in durations:
            raise DataDirError(f"{path}: no durations for utterance {utt_id}")
        try:
            counts = torch.tensor([int(d) for d in durations[utt_id].split()], dtype=torch.long)
        except ValueError:
            raise DataDirError(f"{path}: utterance {utt_id}: durations must be integers, got '{durations[utt_id]}'") from None
        if len(counts) != len(runs) or (counts < 1).any():
            raise DataDirError(f"{path}: utterance {utt_id}: expected {len(runs)} durations >= 1, got {len(counts)}")
        expanded[utt_id] = torch.repeat_interleave(runs, counts)
    return expanded
