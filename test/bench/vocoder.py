"""Benchmark: inference speed of the paper-size unit HiFi-GAN on 2 CPU threads vs real time.

Target (issue 6): at least 3x faster than real time. Also prints the speed-up of folding weight
norm (what `vocode` does) over running the generator in its training form, measured in the same run.
Random weights: speed does not depend on them. Run: python test/bench/vocoder.py [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch

from sofa_speechlm.vocoder import CodeHiFiGANGenerator, VocoderConfig, synthesize

TARGET = 3.0


def seconds_per_run(generator: CodeHiFiGANGenerator, utterances: dict[str, torch.Tensor], batch_size: int, repeats: int) -> float:
    list(synthesize(generator, {k: v[:50] for k, v in utterances.items()}, batch_size))  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        list(synthesize(generator, utterances, batch_size))
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = VocoderConfig()  # the SOFA paper's vocoder (hifigan_unit_200)
    generator = CodeHiFiGANGenerator(config).eval()
    rate, hop = config.sampling_rate, config.code_hop_size
    cases = {
        "1 x 10 s, batch 1": ({"u0": torch.randint(0, 200, (500,))}, 1),
        "4 x 3 s, batch 4": ({f"u{i}": torch.randint(0, 200, (150,)) for i in range(4)}, 4),
    }
    print(f"paper-size generator: {sum(p.numel() for p in generator.parameters()) / 1e6:.1f} M parameters, {args.threads} threads")
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (other processes slow this down)")
    weight_norm_seconds = {name: seconds_per_run(generator, utts, batch, args.repeats) for name, (utts, batch) in cases.items()}
    generator.remove_weight_norm()
    for name, (utts, batch) in cases.items():
        audio_seconds = sum(len(u) for u in utts.values()) * hop / rate
        folded = seconds_per_run(generator, utts, batch, args.repeats)
        speed = audio_seconds / folded
        print(
            f"{name}: {folded:.2f} s for {audio_seconds:.0f} s of audio -> RTF {folded / audio_seconds:.3f}, "
            f"{speed:.2f}x faster than real time (target >= {TARGET:.0f}x: {speed / TARGET:.2f} of target); "
            f"folded weight norm vs training form: {weight_norm_seconds[name] / folded:.2f}x"
        )
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
