"""Calibration batches from the stage-3 training LM text of the four tasks.

Sampling: for each task file (``<lm_text_dir>/<task>.txt``, Kaldi ``uttid line`` tables) the
lines are shuffled with ``seed``, tokenized as in training (ESPnet's sentencepiece tokenizer and
token list) and each prefixed with ``<sos/eos>`` (the last token id), then concatenated and cut
into consecutive windows of ``seqlen`` tokens. Every task contributes the same number of windows
(``nsamples`` split evenly; the first ``nsamples % tasks`` tasks one more), so the calibration
set is balanced over textLM, speechLM, ASR and TTS; windows are interleaved task by task and
grouped into batches of ``batch_size`` (the last batch may be smaller).

Why packing, not padding: the lines are short utterances, and ``quantize`` takes plain token-id
batches [batch, length] without masks; packing wastes no tokens on padding, and every window
starts at a line boundary with ``<sos/eos>``, exactly like a training sequence.
"""
from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Callable, Sequence

import torch

from sofa_speechlm.data import read_table
from sofa_speechlm.text.templates import TASKS

from .calibration import CalibrationError


def _windows_for_task(path: Path, encode, sos_eos_id: int, count: int, seqlen: int, seed: int) -> list[torch.Tensor]:
    if not path.is_file():
        raise CalibrationError(f"calibration: LM text {path} not found (stage 3 writes it)")
    lines = list(read_table(path).values())
    if not lines:
        raise CalibrationError(f"calibration: {path} is empty")
    random.Random(seed).shuffle(lines)
    needed, stream = count * seqlen, []
    for line in lines:
        stream.append(sos_eos_id)
        stream.extend(encode(line))
        if len(stream) >= needed:
            break
    if len(stream) < needed:
        raise CalibrationError(
            f"calibration: too little data in {path}: {len(stream)} tokens in {len(lines)} lines, "
            f"{count} window(s) of {seqlen} tokens need {needed}; lower the number of samples or the sequence length")
    ids = torch.tensor(stream[:needed], dtype=torch.long)
    return list(ids.view(count, seqlen))


def lm_text_calibration(lm_text_dir, encode: Callable[[str], Sequence[int]], sos_eos_id: int, nsamples: int,
                        seqlen: int, batch_size: int, seed: int = 0, tasks: Sequence[str] = TASKS):
    """(list of LongTensor [batch, seqlen], record for quant_config.yaml)."""
    for name, value in (("nsamples", nsamples), ("seqlen", seqlen), ("batch_size", batch_size)):
        if value < 1:
            raise CalibrationError(f"calibration: {name} must be >= 1, got {value}")
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown or not tasks:
        raise CalibrationError(f"calibration: unknown or no task(s) {unknown or list(tasks)}; expected some of {', '.join(TASKS)}")
    lm_text_dir = Path(lm_text_dir)
    per_task = [nsamples // len(tasks) + (1 if i < nsamples % len(tasks) else 0) for i in range(len(tasks))]
    windows = {task: _windows_for_task(lm_text_dir / f"{task}.txt", encode, sos_eos_id, count, seqlen, seed + i)
               for i, (task, count) in enumerate(zip(tasks, per_task)) if count}
    interleaved = [w for group in zip(*[windows[t] + [None] * (max(per_task) - len(windows[t])) for t in windows])
                   for w in group if w is not None]
    samples = torch.stack(interleaved)
    batches = list(samples.split(batch_size))
    record = {
        "sources": [str(lm_text_dir / f"{task}.txt") for task in tasks],
        "tasks": list(tasks),
        "samples_per_task": dict(zip(tasks, per_task)),
        "nsamples": nsamples,
        "seqlen": seqlen,
        "batch_size": batch_size,
        "seed": seed,
        "packing": "lines shuffled per task, each <sos/eos>-prefixed, concatenated, cut into seqlen windows",
        "sha256": hashlib.sha256(samples.numpy().tobytes()).hexdigest(),
    }
    return batches, record
