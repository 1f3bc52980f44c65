"""A task's data dir (textlm, speechlm, asr, tts) as the union of prepared corpus subsets,
keeping only the files that task reads (design.md: textlm needs text, speechlm wav.scp,
asr and tts both), so that a transcribed subset can also feed speechLM and textLM."""

from __future__ import annotations

import shutil
from pathlib import Path

from sofa_speechlm.data.kaldi import DataDir, DataDirError, write_table
from sofa_speechlm.data.ops import TASK_FILES, combine_data_dirs

OPTIONAL_FILES = ("utt2num_samples", "segments")


def _copy_for_task(source: Path, task: str, destination: Path, keep_optional: set[str], fs: int, segmented: bool) -> None:
    data_dir = DataDir(source)
    for name in TASK_FILES[task]:
        if not data_dir.has(name):
            raise DataDirError(f"{source}: has no {name}, which a {task} data dir needs")
    names = ("utt2spk", *TASK_FILES[task], *keep_optional, *(("segments",) if segmented else ()))
    tables = {name: data_dir.require(name) for name in dict.fromkeys(names) if data_dir.has(name)}
    if segmented and "segments" not in tables:
        # Whole-file segments, so that this source combines with segmented ones.
        lengths = data_dir.table("utt2num_samples")
        if lengths is None:
            raise DataDirError(f"{source}: needs utt2num_samples to be combined with segmented data dirs")
        tables["segments"] = {utt_id: f"{utt_id} 0.000 {int(count) / fs:.3f}" for utt_id, count in lengths.items()}
    destination.mkdir(parents=True)
    for name, table in tables.items():
        write_table(destination / name, table)


def make_task_dir(task: str, destination: str | Path, sources: list[str | Path], fs: int = 16000) -> None:
    """Writes `destination` (replacing it) as the union of `sources` with `task`'s files."""
    if task not in TASK_FILES:
        raise ValueError(f"unknown task '{task}'; known: {', '.join(TASK_FILES)}")
    if not sources:
        raise ValueError(f"{destination}: no source data dirs for task {task}")
    sources = [Path(source) for source in sources]
    speech = task != "textlm"
    present = [{name for name in OPTIONAL_FILES if DataDir(source).has(name)} for source in sources]
    segmented = speech and any("segments" in names for names in present)
    keep_optional = set.intersection(*present) if speech else set()
    destination = Path(destination)
    staging = destination.with_name(f".{destination.name}.parts")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        parts = []
        for index, source in enumerate(sources):
            part = staging / str(index)
            _copy_for_task(source, task, part, keep_optional, fs, segmented)
            parts.append(part)
        shutil.rmtree(destination, ignore_errors=True)
        combine_data_dirs(destination, parts)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
