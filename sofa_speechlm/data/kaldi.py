"""Kaldi-style data directories: reading, writing and the consistency rules between files.

A data dir is a folder of `uttid value` tables (wav.scp, text, utt2spk, segments, units, ...)
sorted by uttid in C-locale (byte) order, with unique ids, every per-utterance file covering
the same ids. Errors name the file and line so a user can fix the data by hand.
"""

from __future__ import annotations

from pathlib import Path

PER_UTTERANCE_FILES = ("wav.scp", "segments", "text", "utt2spk", "utt2num_samples", "units")


class DataDirError(ValueError):
    """A data dir (or one of its files) breaks the Kaldi conventions."""


def sort_key(utt_id: str) -> bytes:
    """C-locale order, as `LC_ALL=C sort` and Kaldi's validate_data_dir.sh expect."""
    return utt_id.encode("utf-8")


def read_lines(path: str | Path) -> list[str]:
    """Lines of a UTF-8 text file; non-UTF-8 content is an error naming file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataDirError(f"{path}: file not found")
    data = path.read_bytes()
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    decoded = []
    for number, raw in enumerate(lines, start=1):
        try:
            decoded.append(raw.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError as error:
            raise DataDirError(f"{path}:{number}: not valid UTF-8 ({error.reason} at byte {error.start})") from None
    return decoded


def read_table(path: str | Path, allow_empty_value: bool = False) -> dict[str, str]:
    """Reads `uttid value` lines into a dict in file order; duplicate ids are an error."""
    table: dict[str, str] = {}
    for number, line in enumerate(read_lines(path), start=1):
        parts = line.strip().split(maxsplit=1)
        if not parts:
            raise DataDirError(f"{path}:{number}: empty line")
        utt_id = parts[0]
        value = parts[1] if len(parts) > 1 else ""
        if not value and not allow_empty_value:
            raise DataDirError(f"{path}:{number}: utterance {utt_id} has no value")
        if utt_id in table:
            raise DataDirError(f"{path}:{number}: duplicated id {utt_id}")
        table[utt_id] = value
    return table


def write_table(path: str | Path, table: dict[str, str]) -> None:
    """Writes `uttid value` lines sorted in C-locale order, atomically (tmp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as stream:
        for utt_id in sorted(table, key=sort_key):
            stream.write(f"{utt_id} {table[utt_id]}\n".replace(" \n", "\n"))
    tmp.replace(path)


def spk2utt_from_utt2spk(utt2spk: dict[str, str]) -> dict[str, str]:
    speakers: dict[str, list[str]] = {}
    for utt_id in sorted(utt2spk, key=sort_key):
        speakers.setdefault(utt2spk[utt_id], []).append(utt_id)
    return {speaker: " ".join(utts) for speaker, utts in speakers.items()}


class DataDir:
    """Lazy view of a data dir; each table is read and checked on first use."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise DataDirError(f"{self.path}: data dir not found")
        self._tables: dict[str, dict[str, str] | None] = {}

    def has(self, name: str) -> bool:
        return (self.path / name).is_file()

    def table(self, name: str) -> dict[str, str] | None:
        """The table in file `name`, or None when the file does not exist."""
        if name not in self._tables:
            self._tables[name] = read_table(self.path / name) if self.has(name) else None
        return self._tables[name]

    def require(self, name: str) -> dict[str, str]:
        table = self.table(name)
        if table is None:
            raise DataDirError(f"{self.path}: required file {name} is missing")
        return table

    @property
    def wav_scp(self) -> dict[str, str] | None:
        return self.table("wav.scp")

    @property
    def text(self) -> dict[str, str] | None:
        return self.table("text")

    @property
    def utt2spk(self) -> dict[str, str]:
        return self.require("utt2spk")

    @property
    def units(self) -> dict[str, str] | None:
        return self.table("units")

    @property
    def segments(self) -> dict[str, tuple[str, float, float]] | None:
        """uttid -> (recording id, start s, end s); None without a segments file."""
        raw = self.table("segments")
        if raw is None:
            return None
        parsed = {}
        for number, (utt_id, value) in enumerate(raw.items(), start=1):
            fields = value.split()
            try:
                if len(fields) != 3:
                    raise ValueError
                recording, start, end = fields[0], float(fields[1]), float(fields[2])
            except ValueError:
                raise DataDirError(
                    f"{self.path / 'segments'}:{number}: expected 'uttid recid start end', got '{utt_id} {value}'"
                ) from None
            if end <= start:
                raise DataDirError(f"{self.path / 'segments'}:{number}: end {end} is not after start {start}")
            parsed[utt_id] = (recording, start, end)
        return parsed

    @property
    def utt_ids(self) -> list[str]:
        """Utterance ids in order: those of utt2spk (every data dir has one)."""
        return list(self.utt2spk)
