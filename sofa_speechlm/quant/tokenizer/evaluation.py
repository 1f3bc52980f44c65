"""The dev metric: unit error rate (UER) of a quantized tokenizer against full precision.

UER = the percentage of 50 Hz frames of the dev set whose k-means unit differs from the unit
the full-precision tokenizer gives that frame (quantization changes no frame count, so frames
align one to one). It stands in for the paper's ASR WER in Algorithm 1 and 2: 0 for the full-
precision model by definition, so the degradation Delta of Algorithm 1 is the UER itself."""
from __future__ import annotations

import numpy as np

from sofa_speechlm.speech.kmeans import KmeansQuantizer
from sofa_speechlm.speech.units import deduplicate


def edit_distance(reference, hypothesis) -> int:
    """Levenshtein distance (substitutions, insertions, deletions of one unit each cost 1)."""
    hypothesis = np.asarray(hypothesis)
    previous = np.arange(len(hypothesis) + 1)
    for index, unit in enumerate(reference, start=1):
        current = np.empty_like(previous)
        current[0] = index
        substitution = previous[:-1] + (hypothesis != unit)
        deletion = previous[1:] + 1
        best = np.minimum(substitution, deletion)
        for column in range(1, len(previous)):  # insertions chain along the row
            current[column] = min(best[column - 1], current[column - 1] + 1)
        previous = current
    return int(previous[-1])


class UnitErrorRate:
    """Callable: UER (%) of the reader's model as it is now (or of another reader given to the
    call, e.g. a loaded quantized tokenizer) against the full-precision units computed at init."""

    name = "uer"

    def __init__(self, reader, kmeans: KmeansQuantizer, waveforms: list[np.ndarray]):
        self.reader, self.kmeans, self.waveforms = reader, kmeans, waveforms
        self.reference = self.units()
        self.frames = sum(len(units) for units in self.reference)
        if self.frames == 0:
            raise ValueError("the dev set gives no frames")

    def units(self, reader=None) -> list[np.ndarray]:
        return [self.kmeans((reader or self.reader).extract(waveform)) for waveform in self.waveforms]

    def __call__(self, reader=None) -> float:
        errors = sum(int((hyp != ref).sum()) for hyp, ref in zip(self.units(reader), self.reference))
        return 100.0 * errors / self.frames

    def deduplicated(self, reader=None) -> float:
        """Edit distance of the deduplicated unit sequences, % of the deduplicated reference length."""
        pairs = [(deduplicate(ref.tolist())[0], deduplicate(hyp.tolist())[0]) for hyp, ref in zip(self.units(reader), self.reference)]
        return 100.0 * sum(edit_distance(ref, hyp) for ref, hyp in pairs) / sum(len(ref) for ref, _ in pairs)


def extraction_ms_per_second(reader, waveforms: list[np.ndarray], repeats: int = 3) -> float:
    """Best-of-``repeats`` wall time of extracting the features of all ``waveforms``, in ms per
    second of audio (after one warm-up utterance)."""
    import time

    reader.extract(waveforms[0])
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for waveform in waveforms:
            reader.extract(waveform)
        best = min(best, time.perf_counter() - start)
    seconds = sum(len(waveform) for waveform in waveforms) / reader.sample_rate
    return 1000.0 * best / seconds
