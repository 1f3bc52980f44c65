"""Writes a corpus' subsets as Kaldi data dirs: `<data_dir>/<subset>/` with wav.scp, text (when
transcribed), utt2spk, spk2utt, utt2num_samples (at the recipe's rate) and segments (when
recordings are cut). Every audio file is probed once here, for every corpus alike:
unreadable or empty files are listed and left out, and a file at another rate than the
recipe's is resampled through a sox pipe in wav.scp, or refused (never mixed silently).
"""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import soundfile
from tqdm import tqdm

from sofa_speechlm.data.corpora.base import Recording, Report
from sofa_speechlm.data.corpora.librispeech import find_lm_text
from sofa_speechlm.data.corpora.registry import Corpus, get_corpus
from sofa_speechlm.data.kaldi import DataDirError, write_table
from sofa_speechlm.data.ops import write_data_dir
from sofa_speechlm.data.validate import validate_data_dir

SOX_READABLE = (".flac", ".wav")
CHECK_MODES = ("header", "decode")
PROBE_CHUNK = 4096


@dataclass
class PrepOptions:
    text_norm: str = "upper"        # upper (LibriSpeech's convention) | none
    check_audio: str = "header"     # header: read each file's header; decode: read every sample (slow)
    resample: bool = True           # resample audio at another rate (sox pipe) instead of refusing it
    segment_method: str = "vad"     # Libri-Light: vad (json voice activity) | fixed (windows)
    segment_length: float = 20.0    # Libri-Light: longest utterance, seconds
    min_segment: float = 1.0        # Libri-Light: shorter pieces are left out, seconds
    vctk_mic: str = "mic1"          # VCTK 0.92: which microphone's flac
    num_sentences: int = 0          # LibriSpeech LM text: sentences sampled (0: all)
    seed: int = 777                 # LibriSpeech LM text: sampling seed
    nj: int = 4                     # parallel audio probes (I/O bound)


@dataclass
class SubsetSummary:
    corpus: str
    subset: str
    utterances: int
    hours: float
    report: Report = field(default_factory=Report)


class AudioProblem(Exception):
    pass


def probe_audio(path: Path, mode: str) -> tuple[int, int]:
    """(rate, frames) of an audio file; AudioProblem when unreadable, empty or (decode) truncated."""
    try:
        if mode == "decode":
            waveform, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
            frames = len(waveform)
        else:
            info = soundfile.info(str(path))
            rate, frames = int(info.samplerate), int(info.frames)
    except (RuntimeError, soundfile.LibsndfileError, OSError) as error:
        raise AudioProblem(f"unreadable ({error})") from None
    if frames <= 0:
        raise AudioProblem("empty audio")
    return rate, frames


def _probe_or_problem(path: Path, mode: str) -> tuple[int, int] | AudioProblem:
    try:
        return probe_audio(path, mode)
    except AudioProblem as problem:
        return problem


def wav_entry(path: Path, rate: int, fs: int, resample: bool, where: str) -> str:
    """A wav.scp value giving `path` at fs Hz: the path itself, or a sox resampling pipe."""
    if rate == fs:
        return str(path)
    if not resample:
        raise DataDirError(f"{where}: {path} is at {rate} Hz, the recipe runs at {fs} Hz; rerun with --resample true (wav.scp resamples through sox) or use --fs {rate}")
    if path.suffix.lower() not in SOX_READABLE or shutil.which("sox") is None:
        raise DataDirError(f"{where}: {path} is at {rate} Hz, the recipe runs at {fs} Hz, and sox {'is not installed' if shutil.which('sox') is None else f'cannot read {path.suffix}'}; convert the corpus to {fs} Hz flac first")
    return f"sox {shlex.quote(str(path))} -t wav -r {fs} -b 16 -c 1 - |"


def _cut(recording: Recording, duration: float, options: PrepOptions, report: Report) -> list[tuple[float, float]] | None:
    if recording.window:
        pieces = [(start, min(start + recording.window, duration)) for start in _range(0.0, duration, recording.window)]
    elif recording.segments is not None:
        pieces = [(start, min(end, duration)) for start, end in recording.segments if start < duration]
    else:
        return None
    kept = [(start, end) for start, end in pieces if end - start >= options.min_segment]
    for start, end in pieces:
        if end - start < options.min_segment:
            report.leave_out(f"segment shorter than {options.min_segment} s", f"{recording.rec_id} {start:.2f}-{end:.2f}")
    return kept


def _range(start: float, stop: float, step: float) -> list[float]:
    count = int((stop - start) // step) + (1 if (stop - start) % step else 0)
    return [start + index * step for index in range(count)]


def _write_text_only(recordings: list[Recording], output: Path) -> tuple[int, float]:
    text = {r.rec_id: r.transcript for r in recordings}
    write_data_dir(output, {r.rec_id: r.speaker for r in recordings}, text=text)
    return len(text), 0.0


def _write_speech(corpus: Corpus, subset: str, recordings: list[Recording], output: Path, fs: int, options: PrepOptions, report: Report) -> tuple[int, float]:
    where = f"{corpus.name} {subset}"
    probes = []
    with ThreadPoolExecutor(max(1, options.nj)) as pool, tqdm(total=len(recordings), desc=f"{where} audio", mininterval=10) as progress:
        for begin in range(0, len(recordings), PROBE_CHUNK):  # bounded in flight: corpora run to millions of files
            chunk = recordings[begin : begin + PROBE_CHUNK]
            for recording, probe in zip(chunk, pool.map(_probe_or_problem, [r.audio for r in chunk], [options.check_audio] * len(chunk))):
                if isinstance(probe, AudioProblem):
                    report.leave_out("unreadable or empty audio", f"{recording.rec_id}: {recording.audio}: {probe}")
                    probe = None
                probes.append(probe)
            progress.update(len(chunk))
    wav_scp, utt2spk, text, num_samples, segments = {}, {}, {}, {}, {}
    rates = set()
    for recording, probe in zip(recordings, probes):
        if probe is None:
            continue
        rate, frames = probe
        rates.add(rate)
        entry = wav_entry(recording.audio, rate, fs, options.resample, where)
        duration = frames / rate
        pieces = _cut(recording, duration, options, report)
        if pieces is None:
            wav_scp[recording.rec_id] = entry
            utt2spk[recording.rec_id] = recording.speaker
            num_samples[recording.rec_id] = str(round(frames * fs / rate))
            if recording.transcript is not None:
                text[recording.rec_id] = recording.transcript
            continue
        if pieces:
            wav_scp[recording.rec_id] = entry
        for index, (start, end) in enumerate(pieces):
            utt_id = f"{recording.rec_id}-{index:04d}"
            segments[utt_id] = f"{recording.rec_id} {start:.3f} {end:.3f}"
            utt2spk[utt_id] = recording.speaker
            num_samples[utt_id] = str(round((end - start) * fs))
    if not utt2spk:
        raise DataDirError(f"{where}: no utterances left ({sum(len(v) for v in report.left_out.values())} left out)")
    if rates - {corpus.fs}:
        logging.warning("%s: audio at %s Hz, but %s is published at %d Hz: is this copy converted?", where, "/".join(map(str, sorted(rates - {corpus.fs}))), corpus.name, corpus.fs)
    if rates - {fs}:
        logging.info("%s: audio at %s Hz is resampled to %d Hz by sox pipes in wav.scp", where, "/".join(map(str, sorted(rates - {fs}))), fs)
    write_data_dir(output, utt2spk, text=text or None, wav_scp=wav_scp, num_samples={key: int(value) for key, value in num_samples.items()})
    if segments:
        write_table(output / "segments", segments)
    return len(utt2spk), sum(int(value) for value in num_samples.values()) / fs / 3600


def prepare_subset(corpus: Corpus, root: Path, subset: str, output: Path, fs: int, options: PrepOptions) -> SubsetSummary:
    """Reads one subset, writes it to `output` through a staging dir validated before the move."""
    report = Report()
    recordings = list(corpus.read(root, subset, report, options))
    for recording in [r for r in recordings if not r.transcript and r.audio is None]:
        report.leave_out("empty transcript", recording.rec_id)
    recordings = [r for r in recordings if r.audio is not None or r.transcript]
    staging = output.with_name(f".{output.name}.staging")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        if corpus.fs == 0:
            count, hours = _write_text_only(recordings, staging)
        else:
            count, hours = _write_speech(corpus, subset, recordings, staging, fs, options, report)
        required = ("text",) if corpus.fs == 0 else ("wav.scp",)
        problems = validate_data_dir(staging, fs=fs, require=required, check_audio=False)
        if problems:
            raise DataDirError(f"{corpus.name} {subset}: the prepared data dir is invalid:\n  " + "\n  ".join(problems[:20]))
        shutil.rmtree(output, ignore_errors=True)
        output.parent.mkdir(parents=True, exist_ok=True)
        staging.replace(output)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    report.log(f"{corpus.name} {subset}")
    return SubsetSummary(corpus.name, subset, count, hours, report)


def _listing(folder: Path) -> list[str]:
    """`name size` of each file and `name/` of each folder directly in `folder`, sorted."""
    lines = []
    with os.scandir(folder) as entries:
        for entry in entries:
            lines.append(f"{entry.name}/" if entry.is_dir() else f"{entry.name} {entry.stat().st_size}")
    return sorted(lines)


def subset_source(name: str, corpus_dir: str | Path, subset: str) -> str:
    """What a subset is prepared from, for the stage-1 markers: `root=<the corpus' top folder,
    absolute, links resolved> listing=<12 hex digits>`, the listing being an md5 of the names (and
    the sizes of the files) directly in the top folder and in the subset's folder (the LM text:
    the file's name and size). Another root, a corpus replaced at the same path, or a subset with
    other speakers changes it; audio rewritten in place with the same names and sizes does not.
    Cheap at any scale: two directory listings, no audio read."""
    corpus = get_corpus(name)
    root = corpus.find_root(corpus_dir).resolve()
    if corpus.fs == 0:
        text = find_lm_text(root)
        lines = [f"{text.name} {text.stat().st_size}"]
    else:
        lines = _listing(root)
        if subset != "all" and (root / subset).is_dir():
            lines += [f"{subset}/{line}" for line in _listing(root / subset)]
    digest = hashlib.md5("\n".join(lines).encode("utf-8", "surrogateescape")).hexdigest()[:12]
    return f"root={root} listing={digest}"


def prepare_corpus(name: str, corpus_dir: str | Path, data_dir: str | Path, subsets: list[str] | None = None, fs: int = 16000, options: PrepOptions | None = None) -> list[SubsetSummary]:
    """Every requested subset of corpus `name` (by default, its published ones that are on disk) into data_dir/<subset>."""
    corpus = get_corpus(name)
    options = options or PrepOptions()
    if options.check_audio not in CHECK_MODES:
        raise ValueError(f"check_audio '{options.check_audio}' is not one of: {', '.join(CHECK_MODES)}")
    if options.segment_method not in ("vad", "fixed"):
        raise ValueError(f"segment_method '{options.segment_method}' is not one of: vad, fixed")
    root = corpus.find_root(corpus_dir)
    on_disk = [subset for subset in corpus.subsets if corpus.fs == 0 or subset == "all" or (root / subset).is_dir()]
    subsets = subsets or on_disk
    if corpus.fs:
        missing = [subset for subset in subsets if subset not in on_disk and not (root / subset).is_dir()]
        if missing or not subsets:
            present = sorted(path.name for path in root.iterdir() if path.is_dir())
            raise DataDirError(f"{root}: {corpus.name} subset(s) {', '.join(missing or corpus.subsets)} not found (present: {', '.join(present) or 'none'}); expected {corpus.layout}")
    summaries = []
    for subset in subsets:
        summary = prepare_subset(corpus, root, subset, Path(data_dir) / subset, fs, options)
        logging.info("%s %s: %d utterances%s -> %s", name, subset, summary.utterances, f" ({summary.hours:.2f} h)" if corpus.fs else "", Path(data_dir) / subset)
        summaries.append(summary)
    return summaries
