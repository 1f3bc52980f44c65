"""One job's share of a data dir through a feature reader, skipping unusable audio.

Two jobs use it: `dump_features` writes the features (stage 2a dumps only the k-means
training sample), and `dump_units` labels each utterance's features with k-means as soon as
they are computed, so the features of a whole corpus never sit on disk. Both write
`bad_utts.<job>.txt` (`uttid reason`): unreadable, empty, NaN/Inf or all-zero audio and
audio shorter than one frame are listed there and left out. Features of an utterance do not
depend on the other utterances or on the job split, so any `--nj` gives the same output.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Callable, Iterator

import kaldiio
import numpy as np
from tqdm import tqdm

from sofa_speechlm.data import AudioError, DataDir, DataDirError, iter_utterances
from sofa_speechlm.speech.hubert import FeatureError
from sofa_speechlm.speech.units import DEDUP_FILE, DURATION_FILE, UNITS_FILE, deduplicate

BAD_UTTS = "bad_utts.{job}.txt"


def build_feature_reader(hubert_ckpt: str | None, layer: int = 6, fs: int = 16000, device: str = "cpu"):
    """HuBERT layer features when a checkpoint is given, MFCC + deltas otherwise."""
    if hubert_ckpt:
        from sofa_speechlm.speech.hubert import HubertFeatureReader

        return HubertFeatureReader(hubert_ckpt, layer=layer, device=device)
    from sofa_speechlm.speech.mfcc import MfccFeatureReader

    return MfccFeatureReader(sample_rate=fs)


def job_share(items: list[str], job: int, nj: int) -> list[str]:
    """The contiguous part of `items` that job `job` (1-based) of `nj` handles."""
    if nj < 1 or not 1 <= job <= nj:
        raise ValueError(f"--job {job} --nj {nj}: expected 1 <= job <= nj")
    start, stop = (job - 1) * len(items) // nj, job * len(items) // nj
    return items[start:stop]


def choose_utterances(utt_ids: list[str], percent: float, seed: int) -> list[str]:
    """A seeded random `percent` fraction of the utterances (all of them at 1.0), in their order."""
    if not 0.0 < percent <= 1.0:
        raise ValueError(f"--percent {percent}: expected a fraction in (0, 1]")
    count = math.ceil(len(utt_ids) * percent)
    chosen = np.random.default_rng(seed).choice(len(utt_ids), size=count, replace=False)
    return [utt_ids[index] for index in sorted(chosen)]


def audio_problem(waveform: np.ndarray) -> str | None:
    """Why a waveform must not reach k-means (NaN/Inf samples, digital silence), or None."""
    finite = np.isfinite(waveform)
    if not finite.all():
        return f"{int((~finite).sum())} NaN or Inf samples of {len(waveform)}"
    if not waveform.any():
        return f"all {len(waveform)} samples are zero"
    return None


def read_waveforms(data_dir: DataDir, fs: int, utt_ids: list[str]) -> Iterator[tuple[str, np.ndarray | None, str | None]]:
    """Yields (utt_id, waveform, None), or (utt_id, None, reason) for audio that cannot be used."""
    pending = list(utt_ids)
    while pending:
        done = 0
        try:
            for utt_id, waveform in iter_utterances(data_dir, fs, pending):
                done += 1
                problem = audio_problem(waveform)
                yield utt_id, (None if problem else waveform), problem
        except DataDirError:
            raise
        except (AudioError, RuntimeError, OSError, ValueError) as error:
            yield pending[done], None, str(error)
            done += 1
        pending = pending[done:]


def iter_features(data: DataDir, reader, utt_ids: list[str], bad: dict[str, str]) -> Iterator[tuple[str, np.ndarray]]:
    """(utt_id, [frames, dim] features) of the usable utterances; the others go into `bad` with why."""
    progress = tqdm(read_waveforms(data, reader.sample_rate, utt_ids), total=len(utt_ids), desc=f"features {data.path}", mininterval=10)
    for utt_id, waveform, reason in progress:
        if waveform is not None:
            try:
                yield utt_id, reader.extract(waveform)
                continue
            except FeatureError as error:
                reason = str(error)
        bad[utt_id] = reason.replace("\n", " ")
        logging.warning("left out %s: %s", utt_id, bad[utt_id])


def write_bad_utts(out_dir: Path, job: int, bad: dict[str, str], data: DataDir, done: int, what: str) -> None:
    path = out_dir / BAD_UTTS.format(job=job)
    with open(path, "w", encoding="utf-8") as stream:
        stream.writelines(f"{utt_id} {reason}\n" for utt_id, reason in bad.items())
    logging.info("%s: %s of %d utterances in %s; %d left out (listed in %s)", data.path, what, done, out_dir, len(bad), path)


def dump_features(
    data_dir: str | Path, out_dir: str | Path, reader, job: int = 1, nj: int = 1,
    percent: float = 1.0, seed: int = 0, max_frames: int = 0,
) -> dict[str, str]:
    """Writes this job's `feats.<job>.{ark,scp}`; returns {utt_id: reason} of the utterances left out.

    `percent`/`seed` choose the utterances of the whole data dir (the same choice in every job);
    `max_frames` > 0 bounds this job's frames to its share, max_frames / nj, taking the chosen
    utterances in a seeded random order until the bound is reached (an unbiased subset).
    """
    data = DataDir(data_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    utt_ids = job_share(choose_utterances(data.utt_ids, percent, seed), job, nj)
    budget = math.ceil(max_frames / nj) if max_frames > 0 else 0
    if budget:
        utt_ids = [utt_ids[index] for index in np.random.default_rng([seed, job]).permutation(len(utt_ids))]
    bad: dict[str, str] = {}
    written = frames = 0
    ark, scp = out_dir / f"feats.{job}.ark", out_dir / f"feats.{job}.scp"
    with kaldiio.WriteHelper(f"ark,scp:{ark},{scp}") as writer:
        for utt_id, features in iter_features(data, reader, utt_ids, bad):
            writer(utt_id, features)
            written, frames = written + 1, frames + len(features)
            if budget and frames >= budget:
                logging.info("reached this job's bound of %d frames (--max_frames %d over %d jobs)", budget, max_frames, nj)
                break
    write_bad_utts(out_dir, job, bad, data, written, f"{frames} frames of features")
    return bad


def dump_units(data_dir: str | Path, out_dir: str | Path, reader, quantize: Callable[[np.ndarray], np.ndarray], job: int = 1, nj: int = 1) -> dict[str, str]:
    """Writes this job's `units.<job>`, `units_dedup.<job>`, `units_dur.<job>` tables, labelling
    each utterance's features as they are computed; returns {utt_id: reason} of those left out.

    Lines are written as they come (in the data dir's sorted order), so a job holds one
    utterance's features and units at a time whatever the size of its share.
    """
    data = DataDir(data_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    bad: dict[str, str] = {}
    paths = [out_dir / f"{name}.{job}" for name in (UNITS_FILE, DEDUP_FILE, DURATION_FILE)]
    streams = [open(path.with_name(path.name + ".tmp"), "w", encoding="utf-8") for path in paths]
    labelled = 0
    try:
        for utt_id, features in iter_features(data, reader, job_share(data.utt_ids, job, nj), bad):
            ids = quantize(features).tolist()
            for stream, values in zip(streams, (ids, *deduplicate(ids))):
                stream.write(f"{utt_id} {' '.join(map(str, values))}\n")
            labelled += 1
    finally:
        for stream in streams:
            stream.close()
    for path in paths:
        path.with_name(path.name + ".tmp").replace(path)
    write_bad_utts(out_dir, job, bad, data, labelled, "units")
    return bad
