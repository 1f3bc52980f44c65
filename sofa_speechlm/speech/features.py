"""Dumping frame features of a data dir, one job's share at a time, skipping unusable audio.

Each job writes `feats.<job>.ark/.scp` (kaldiio float32 matrices, [frames, dim]) and
`bad_utts.<job>.txt` (`uttid reason`, the utterances left out). Features of an utterance do
not depend on the other utterances or on the job split, so any `--nj` gives the same features.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterator

import kaldiio
import numpy as np
from tqdm import tqdm

from sofa_speechlm.data import AudioError, DataDir, DataDirError, iter_utterances
from sofa_speechlm.speech.hubert import FeatureError


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


def read_waveforms(data_dir: DataDir, fs: int, utt_ids: list[str]) -> Iterator[tuple[str, np.ndarray | None, str | None]]:
    """Yields (utt_id, waveform, None), or (utt_id, None, reason) for audio that cannot be read."""
    pending = list(utt_ids)
    while pending:
        done = 0
        try:
            for utt_id, waveform in iter_utterances(data_dir, fs, pending):
                done += 1
                yield utt_id, waveform, None
        except DataDirError:
            raise
        except (AudioError, RuntimeError, OSError, ValueError) as error:
            yield pending[done], None, str(error)
            done += 1
        pending = pending[done:]


def dump_features(data_dir: str | Path, out_dir: str | Path, reader, job: int = 1, nj: int = 1) -> dict[str, str]:
    """Writes this job's features; returns {utt_id: reason} of the utterances left out."""
    data = DataDir(data_dir)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    utt_ids = job_share(data.utt_ids, job, nj)
    bad: dict[str, str] = {}
    ark, scp = out_dir / f"feats.{job}.ark", out_dir / f"feats.{job}.scp"
    with kaldiio.WriteHelper(f"ark,scp:{ark},{scp}") as writer:
        progress = tqdm(read_waveforms(data, reader.sample_rate, utt_ids), total=len(utt_ids), desc=f"features {data.path}", mininterval=10)
        for utt_id, waveform, reason in progress:
            if waveform is not None:
                try:
                    writer(utt_id, reader.extract(waveform))
                    continue
                except FeatureError as error:
                    reason = str(error)
            bad[utt_id] = reason.replace("\n", " ")
            logging.warning("left out %s: %s", utt_id, bad[utt_id])
    with open(out_dir / f"bad_utts.{job}.txt", "w", encoding="utf-8") as stream:
        stream.writelines(f"{utt_id} {reason}\n" for utt_id, reason in bad.items())
    logging.info("%s: features of %d utterances in %s; %d left out (listed in %s)",
                 data.path, len(utt_ids) - len(bad), scp, len(bad), out_dir / f"bad_utts.{job}.txt")
    return bad
