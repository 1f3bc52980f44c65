"""Benchmark: feature extraction time and parameter size of a quantized HuBERT tokenizer vs full
precision, on a random HuBERT-base-shaped model (the shapes decide the speed, not the weights).

Full precision, W8A8 with real int8 linears (stage 5's oneDNN / torchao path, convolutions
simulated) and W8A8 fully simulated are timed alternately (--repeats rounds, best of each kept,
so the ratios compare runs of the same time window) over --seconds of audio cut at --layer.
Prints the ratios; asserts nothing about time.

    python test/bench/tokenizer_ptq.py                   # HuBERT base, layer 6, 10 s of audio
    python test/bench/tokenizer_ptq.py --device cuda     # torchao int8 kernel
"""
import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layer", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--num_threads", type=int, default=0)
    args = parser.parse_args()

    import numpy as np
    import torch
    from transformers import HubertConfig, HubertModel

    from sofa_speechlm.quant.tokenizer.apply import QuantPlan
    from sofa_speechlm.quant.tokenizer.calibrators import CALIBRATORS
    from sofa_speechlm.quant.tokenizer.io import quantize_reader
    from sofa_speechlm.quant.tokenizer.layers import quantizable_layers
    from sofa_speechlm.quant.tokenizer.report import parameter_bytes
    from sofa_speechlm.quant.tokenizer.statistics import activation_histograms
    from sofa_speechlm.speech.hubert import HubertFeatureReader

    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    torch.manual_seed(0)
    waveform = (0.1 * np.random.default_rng(0).standard_normal(int(args.seconds * 16000))).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        HubertModel(HubertConfig()).save_pretrained(tmp)
        readers = {name: HubertFeatureReader(tmp, layer=args.layer, device=args.device) for name in ("fp", "real", "simulated")}
    layers = quantizable_layers(readers["fp"].model, "all")
    hists = activation_histograms(readers["fp"], layers, [waveform[: 3 * 16000]], bins=512)
    plan = QuantPlan(8, {name: CALIBRATORS["max"](hists[name], 8) for name in layers}, 8)
    executions = {name: quantize_reader(readers[name], plan, "all", name) for name in ("real", "simulated")}
    best = {name: float("inf") for name in readers}
    for reader in readers.values():
        reader.extract(waveform)
    for _ in range(args.repeats):
        for name, reader in readers.items():
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            start = time.perf_counter()
            reader.extract(waveform)
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            best[name] = min(best[name], time.perf_counter() - start)
    fp_bytes = parameter_bytes(readers["fp"].model)
    w8_bytes = parameter_bytes(readers["fp"].model, layers, 8)
    print(f"HuBERT base shape, layer {args.layer}, {args.seconds:g} s audio on {args.device} ({torch.get_num_threads()} threads)")
    print(f"  size: fp32 {fp_bytes / 1e6:.1f} MB, W8 {w8_bytes / 1e6:.1f} MB, ratio {w8_bytes / fp_bytes:.3f}")
    for name in readers:
        label = f"W8A8 {executions.get(name, '')}".strip() if name != "fp" else "fp32"
        print(f"  {label:16s} {1000 * best[name]:8.1f} ms   speed-up vs fp32 {best['fp'] / best[name]:.2f}x")


if __name__ == "__main__":
    main()
