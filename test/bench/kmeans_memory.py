"""Benchmark: peak memory of learning k-means from a feature dump, all frames vs a --max_frames sample.

Baseline = what stage 2a did before: every dumped frame concatenated in memory, then
MiniBatchKMeans (fairseq settings). Bounded = `sample_features(max_frames)` (a reservoir
sample read one utterance at a time), then the same MiniBatchKMeans. Each runs in its own
process on the same random dump; the peak resident memory (ru_maxrss) of each is printed with
their ratio and the bound's prediction (max_frames x dim x 4 bytes). k-means runs one
iteration only: memory does not grow with iterations. Prints; never asserts.

    PYTHONPATH=. python test/bench/kmeans_memory.py [--frames 200000] [--dim 768] [--max_frames 50000] [--nclusters 200]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import kaldiio
import numpy as np


def write_dump(path: Path, frames: int, dim: int, per_utterance: int = 500) -> Path:
    rng = np.random.default_rng(0)
    scp = path / "feats.scp"
    with kaldiio.WriteHelper(f"ark,scp:{path / 'feats.ark'},{scp}") as writer:
        for index in range(0, frames, per_utterance):
            writer(f"utt{index:09d}", rng.standard_normal((min(per_utterance, frames - index), dim)).astype(np.float32))
    return scp


def measure(scp: str, max_frames: int, nclusters: int) -> dict:
    """In this process: load (all frames when max_frames is 0), one k-means iteration; peak RSS."""
    from sklearn.cluster import MiniBatchKMeans

    from sofa_speechlm.speech.kmeans import FAIRSEQ_KMEANS_SETTINGS, sample_features

    start = time.perf_counter()
    if max_frames:
        features = sample_features([scp], max_frames, seed=0)
    else:
        features = np.concatenate(list(kaldiio.load_scp(scp).values())).astype(np.float32, copy=False)
    loaded = time.perf_counter() - start
    settings = {**FAIRSEQ_KMEANS_SETTINGS, "max_iter": 1, "n_init": 3}
    MiniBatchKMeans(n_clusters=nclusters, random_state=0, compute_labels=False, **settings).fit(features)
    return {"frames": len(features), "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "load_s": loaded}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=200_000, help="frames in the dump (50 per second of speech)")
    parser.add_argument("--dim", type=int, default=768, help="feature dimension (HuBERT base: 768)")
    parser.add_argument("--max_frames", type=int, default=50_000)
    parser.add_argument("--nclusters", type=int, default=200)
    parser.add_argument("--measure", nargs=2, metavar=("SCP", "MAX_FRAMES"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure[0], int(args.measure[1]), args.nclusters)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        scp = write_dump(Path(tmp), args.frames, args.dim)
        results = {}
        for name, bound in (("all frames", 0), ("max_frames", args.max_frames)):
            command = [sys.executable, __file__, "--measure", str(scp), str(bound), "--nclusters", str(args.nclusters)]
            results[name] = json.loads(subprocess.run(command, check=True, capture_output=True, text=True).stdout)
    dump_mb = args.frames * args.dim * 4 / 2**20
    sample_mb = args.max_frames * args.dim * 4 / 2**20
    print(f"dump: {args.frames} frames x {args.dim} dims = {dump_mb:.0f} MB; --max_frames {args.max_frames} = {sample_mb:.0f} MB; K={args.nclusters}")
    for name, result in results.items():
        print(f"{name:>10}: {result['frames']} frames in memory, peak RSS {result['peak_mb']:.0f} MB (loading {result['load_s']:.1f} s)")
    ratio = results["max_frames"]["peak_mb"] / results["all frames"]["peak_mb"]
    print(f"peak RSS bounded / all frames: {ratio:.2f}")
    print(f"bounded peak minus its sample: {results['max_frames']['peak_mb'] - sample_mb:.0f} MB (interpreter, torch-free imports, sklearn work)")


if __name__ == "__main__":
    main()
