"""Stage 3's LM text: every utterance of a task's data dir written with the task's template.

`<output_dir>/<task>.txt` holds `uttid <template text>`; `<output_dir>/all.txt` holds every task
together with keys `<task>_<uttid>` (the same utterance serves several tasks).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

from sofa_speechlm.data import DataDir, DataDirError, write_table
from sofa_speechlm.speech.units import UNITS_FILE, read_units
from sofa_speechlm.text.templates import format_task, needs


def task_lines(data_dir: str | Path, task: str, units_file: str = UNITS_FILE) -> dict[str, str]:
    """uttid -> LM text of `task` for a data dir; utterances without units are left out (logged)."""
    data = DataDir(data_dir)
    inputs = needs(task)
    texts = data.require("text") if "text" in inputs else {}
    units = read_units(data, units_file) if "units" in inputs else {}
    lines, without_units = {}, 0
    for utt_id in data.utt_ids:
        if "units" in inputs and utt_id not in units:
            without_units += 1
            continue
        if "text" in inputs and utt_id not in texts:
            raise DataDirError(f"{data.path / 'text'}: no text for utterance {utt_id}")
        try:
            lines[utt_id] = format_task(task, texts.get(utt_id), units.get(utt_id))
        except ValueError as error:
            raise DataDirError(f"{data.path}: utterance {utt_id}: {error}") from None
    if without_units:
        logging.warning("%s: %d utterances have no %s (unusable audio in stage 2) and are left out", data.path, without_units, units_file)
    if not lines:
        raise DataDirError(f"{data.path}: no utterance for the {task} task")
    return lines


def write_lm_text(split_dir: str | Path, output_dir: str | Path, tasks: list[str], units_file: str = UNITS_FILE) -> None:
    """Writes `<task>.txt` for each task whose data dir `split_dir/<task>` exists, and all.txt."""
    output_dir = Path(output_dir)
    combined = {}
    for task in tasks:
        lines = task_lines(Path(split_dir) / task, task, units_file)
        write_table(output_dir / f"{task}.txt", lines)
        combined.update({f"{task}_{utt_id}": line for utt_id, line in lines.items()})
        logging.info("%s: %d %s lines", output_dir / f"{task}.txt", len(lines), task)
    write_table(output_dir / "all.txt", combined)


def iter_lm_text(path: str | Path) -> Iterator[tuple[str, str]]:
    """(uttid, text) of each `uttid text` line, read one line at a time (corpora larger than memory).

    The same rules as `read_table` except for duplicate ids (checking them would keep every id).
    """
    path = Path(path)
    if not path.is_file():
        raise DataDirError(f"{path}: file not found")
    with open(path, "rb") as stream:
        for number, raw in enumerate(stream, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as error:
                raise DataDirError(f"{path}:{number}: not valid UTF-8 ({error.reason} at byte {error.start})") from None
            parts = line.strip().split(maxsplit=1)
            if not parts:
                raise DataDirError(f"{path}:{number}: empty line")
            if len(parts) < 2:
                raise DataDirError(f"{path}:{number}: utterance {parts[0]} has no value")
            yield parts[0], parts[1]
