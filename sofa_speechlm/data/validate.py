"""Checks a data dir against the Kaldi conventions and the recipe's audio settings.

Every problem found is reported with its file and line (up to a limit), so one run tells a
user everything to fix rather than one problem at a time.
"""

from __future__ import annotations

from pathlib import Path

from sofa_speechlm.data.audio import AudioError, audio_info
from sofa_speechlm.data.kaldi import PER_UTTERANCE_FILES, DataDir, DataDirError, read_lines, sort_key

MAX_REPORTED = 20


def _check_table_file(path: Path, problems: list[str], empty_value_message: str) -> dict[str, str] | None:
    """Reads one table, recording encoding, emptiness, duplicate and order problems."""
    try:
        lines = read_lines(path)
    except DataDirError as error:
        problems.append(str(error))
        return None
    table: dict[str, str] = {}
    previous = None
    for number, line in enumerate(lines, start=1):
        parts = line.strip().split(maxsplit=1)
        if not parts:
            problems.append(f"{path}:{number}: empty line")
            continue
        utt_id, value = parts[0], (parts[1] if len(parts) > 1 else "")
        if not value.strip():
            problems.append(f"{path}:{number}: {empty_value_message} for {utt_id}")
        if utt_id in table:
            problems.append(f"{path}:{number}: duplicated id {utt_id}")
        elif previous is not None and sort_key(utt_id) < sort_key(previous):
            problems.append(f"{path}:{number}: not sorted: {utt_id} comes after {previous} (run local/fix_data_dir.sh)")
        previous = utt_id
        table[utt_id] = value
    return table


def _check_audio(data_dir: DataDir, wav_scp: dict[str, str], fs: int, check_pipes: bool, problems: list[str]) -> dict[str, int]:
    """Audio of every wav.scp entry exists, reads, is non-empty and has rate `fs`."""
    lengths: dict[str, int] = {}
    path = data_dir.path / "wav.scp"
    for number, (utt_id, entry) in enumerate(wav_scp.items(), start=1):
        if entry.strip().endswith("|") and not check_pipes:
            continue
        if not entry.strip().endswith("|") and not Path(entry.strip()).is_file():
            problems.append(f"{path}:{number}: wav path of {utt_id} does not exist: {entry}")
            continue
        try:
            rate, length = audio_info(entry)
        except AudioError as error:
            problems.append(f"{path}:{number}: {utt_id}: {error}")
            continue
        if length == 0:
            problems.append(f"{path}:{number}: {utt_id}: empty audio {entry}")
        if fs and rate != fs:
            problems.append(f"{path}:{number}: {utt_id}: sample rate {rate} Hz, the recipe expects {fs} Hz ({entry})")
        lengths[utt_id] = length
    return lengths


def validate_data_dir(path: str | Path, fs: int = 0, require: tuple[str, ...] = (), check_audio: bool = True, check_pipes: bool = False) -> list[str]:
    """Returns the list of problems of a data dir (empty when it is valid).

    `require`: files that must exist besides utt2spk and spk2utt; fs = 0 skips the rate check.
    """
    data_dir = DataDir(path)
    problems: list[str] = []
    for name in ("utt2spk", "spk2utt", *require):
        if not data_dir.has(name):
            problems.append(f"{data_dir.path}: required file {name} is missing")
    if not (data_dir.has("wav.scp") or data_dir.has("text")):
        problems.append(f"{data_dir.path}: neither wav.scp nor text exists; a data dir needs audio or text")

    tables: dict[str, dict[str, str]] = {}
    for name in (*PER_UTTERANCE_FILES, "spk2utt"):
        if data_dir.has(name):
            message = "empty transcript" if name == "text" else "no value"
            table = _check_table_file(data_dir.path / name, problems, message)
            if table is not None:
                tables[name] = table

    utt2spk = tables.get("utt2spk")
    if utt2spk is not None:
        reference = set(utt2spk)
        keyed_by_utterance = [name for name in PER_UTTERANCE_FILES if name in tables and name != "utt2spk"]
        if "segments" in tables:
            # With segments, wav.scp is keyed by recording, not by utterance.
            keyed_by_utterance = [name for name in keyed_by_utterance if name != "wav.scp"]
            recordings = {value.split()[0] for value in tables["segments"].values() if value.split()}
            for recording in sorted(recordings - set(tables.get("wav.scp", {})), key=sort_key)[:MAX_REPORTED]:
                problems.append(f"{data_dir.path / 'segments'}: recording {recording} is not in wav.scp")
        for name in keyed_by_utterance:
            ids = set(tables[name])
            for utt_id in sorted(reference - ids, key=sort_key)[:MAX_REPORTED]:
                problems.append(f"{data_dir.path / name}: utterance {utt_id} of utt2spk is missing")
            for utt_id in sorted(ids - reference, key=sort_key)[:MAX_REPORTED]:
                problems.append(f"{data_dir.path / name}: utterance {utt_id} is not in utt2spk")
        if "spk2utt" in tables:
            expected = {}
            for utt_id, speaker in utt2spk.items():
                expected.setdefault(speaker, set()).add(utt_id)
            actual = {speaker: set(value.split()) for speaker, value in tables["spk2utt"].items()}
            if expected != actual:
                problems.append(f"{data_dir.path / 'spk2utt'}: does not match utt2spk (regenerate it with local/fix_data_dir.sh)")

    if check_audio and "wav.scp" in tables:
        lengths = _check_audio(data_dir, tables["wav.scp"], fs, check_pipes, problems)
        if "utt2num_samples" in tables and "segments" not in tables:
            for number, (utt_id, value) in enumerate(tables["utt2num_samples"].items(), start=1):
                if not value.isdigit():
                    problems.append(f"{data_dir.path / 'utt2num_samples'}:{number}: expected a sample count, got '{value}'")
                elif utt_id in lengths and int(value) != lengths[utt_id]:
                    problems.append(f"{data_dir.path / 'utt2num_samples'}:{number}: {utt_id} has {value} samples, its audio has {lengths[utt_id]}")
    return problems
