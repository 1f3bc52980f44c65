"""Benchmark: seconds of audio per second through the unit pipeline vs a bare HuBERT forward.

Pipeline = what stage 2a runs per utterance: read the wav (data dir), HuBERT layer features
(HubertFeatureReader: normalisation, chunking, encoder cut after the layer), writing them to
a kaldiio ark, reading them back and k-means labelling (K centres). Baseline = a bare forward
of the same HubertModel, cut after the same layer, on waveforms already in memory. Both run
in this process with the same threads, alternating; the best of --repeats rounds counts.
Target: overhead <= 10%. Also printed: the work outside the model timed on its own, a
figure that CPU contention disturbs less. Prints ratios; never asserts on time.

    python test/bench/units.py [--size base|small] [--utterances 8] [--seconds 4]
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

import kaldiio
import numpy as np
import soundfile
import torch
from transformers import HubertConfig, HubertModel

from sofa_speechlm.data import DataDir, iter_utterances, write_table
from sofa_speechlm.speech.features import dump_features
from sofa_speechlm.speech.hubert import HubertFeatureReader
from sofa_speechlm.speech.kmeans import KmeansQuantizer

SIZES = {
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
    "small": dict(hidden_size=256, num_hidden_layers=8, num_attention_heads=4, intermediate_size=1024, conv_dim=(256,) * 7),
}


def make_data_dir(root: Path, utterances: int, seconds: float) -> None:
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    wav_scp = {}
    for index in range(utterances):
        path = root / f"utt{index:03d}.wav"
        soundfile.write(path, (0.1 * rng.standard_normal(int(seconds * 16000))).astype(np.float32), 16000)
        wav_scp[f"utt{index:03d}"] = str(path)
    write_table(root / "wav.scp", wav_scp)
    write_table(root / "utt2spk", {utt_id: "spk" for utt_id in wav_scp})


def best_interleaved(repeats: int, *runs) -> list[float]:
    """Best time of each run over `repeats` rounds; runs alternate so that load changes hit both."""
    times = [[] for _ in runs]
    for _ in range(repeats):
        for run, spent in zip(runs, times):
            start = time.perf_counter()
            run()
            spent.append(time.perf_counter() - start)
    return [min(spent) for spent in times]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=SIZES, default="base", help="random HuBERT size")
    parser.add_argument("--layer", type=int, default=6)
    parser.add_argument("--nclusters", type=int, default=200)
    parser.add_argument("--utterances", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each utterance")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        HubertModel(HubertConfig(**SIZES[args.size])).save_pretrained(tmp / "hubert")
        make_data_dir(tmp / "data", args.utterances, args.seconds)
        reader = HubertFeatureReader(tmp / "hubert", layer=args.layer)
        quantizer = KmeansQuantizer(np.random.default_rng(0).standard_normal((args.nclusters, reader.dim)).astype(np.float32))
        waveforms = [torch.from_numpy(w)[None] for _, w in iter_utterances(DataDir(tmp / "data"), 16000)]
        audio_seconds = args.utterances * args.seconds

        def bare_forward():
            with torch.inference_mode():
                for waveform in waveforms:
                    reader.model(waveform)

        def pipeline():
            dump_features(tmp / "data", tmp / "feats", reader)
            for matrix in kaldiio.load_scp(str(tmp / "feats" / "feats.1.scp")).values():
                quantizer(matrix)

        features = {f"utt{index:03d}": reader.extract(w[0].numpy()) for index, w in enumerate(waveforms)}

        def outside_the_model():
            """The pipeline's work besides the forward: audio reading, ark write and read, k-means."""
            list(iter_utterances(DataDir(tmp / "data"), 16000))
            with kaldiio.WriteHelper(f"ark,scp:{tmp / 'side.ark'},{tmp / 'side.scp'}") as writer:
                for utt_id, matrix in features.items():
                    writer(utt_id, matrix)
            for matrix in kaldiio.load_scp(str(tmp / "side.scp")).values():
                quantizer(matrix)

        bare_forward()  # warm-up
        bare, piped, outside = best_interleaved(args.repeats, bare_forward, pipeline, outside_the_model)
    print(f"HuBERT {args.size} (layer {args.layer}, {torch.get_num_threads()} threads), {audio_seconds:.0f} s of audio, K={args.nclusters}")
    print(f"bare forward : {audio_seconds / bare:8.1f} audio-s/s")
    print(f"unit pipeline: {audio_seconds / piped:8.1f} audio-s/s")
    print(f"pipeline overhead: {100 * (piped / bare - 1):+.1f}% (target <= +10%)")
    print(f"work outside the model alone (read, ark write/read, k-means): {100 * outside / bare:.1f}% of the bare forward")


if __name__ == "__main__":
    main()
