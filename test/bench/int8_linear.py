"""Benchmark: prefill throughput of the real W8A8 linear vs FP32 on OPT-125m-sized layers.

Layers of one OPT-125m decoder layer (hidden 768, FFN 3072): q/k/v/out 768x768, fc1 768->3072,
fc2 3072->768, on 512 tokens. Compared, each against FP32 nn.Linear measured in the same run
(best of --repeats after a warm-up, alternating, since the CPU here is shared and noisy):
  ours     sofa_speechlm.quant.real.Int8Linear (per-token int8 activations; oneDNN
           qlinear_pointwise on CPU, torchao's int_scaled_matmul on CUDA)
  torchao  torchao's Int8DynamicActivationInt8WeightConfig on the same layer
  sim      the simulated (fake-quant) QuantLinear, i.e. what W8A8 costs without a kernel
Prints tokens/s and the ratio to FP32; asserts nothing. With VNNI/AMX one oneDNN pass is exact
(2.7-3.4x FP32 on 1 thread on this project's AVX512-VNNI EPYC, docs/quantization.md); without
it the exact GEMM runs on a doubled K (see real.py) and reaches ~0.8-0.95x FP32.

    python test/bench/int8_linear.py [--tokens 512] [--threads 1] [--device cpu]
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

LAYERS = {"q/k/v/out": (768, 768), "fc1": (768, 3072), "fc2": (3072, 768)}


def best_times(functions, repeats, device):
    import torch

    for f in functions.values():
        f()  # warm-up
    best = {name: float("inf") for name in functions}
    for _ in range(repeats):
        for name, f in functions.items():
            start = time.perf_counter()
            f()
            if device == "cuda":
                torch.cuda.synchronize()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    import torch
    from torch import nn
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig, quantize_

    from sofa_speechlm.quant.modules import QuantLinear
    from sofa_speechlm.quant.real import _kernel_for

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"device {args.device}, {args.tokens} tokens, {args.threads} thread(s), best of {args.repeats}")
    print(f"{'layer':10s} {'fp32 tok/s':>12s} {'ours':>8s} {'torchao':>8s} {'sim':>8s}   (ratios: fp32 time / time)")
    for name, (d_in, d_out) in LAYERS.items():
        linear = nn.Linear(d_in, d_out).to(args.device)
        x = torch.randn(args.tokens, d_in, device=args.device)
        simulated = QuantLinear.from_linear(linear, w_bits=8, a_bits=8)
        simulated.freeze()
        ours = _kernel_for(simulated, "W8A8", args.device)
        reference = nn.Linear(d_in, d_out).to(args.device)
        reference.load_state_dict(linear.state_dict())
        quantize_(reference, Int8DynamicActivationInt8WeightConfig())
        with torch.no_grad():
            error = ((ours(x) - simulated(x)).norm() / simulated(x).norm()).item()
            times = best_times({"fp32": lambda: linear(x), "ours": lambda: ours(x), "torchao": lambda: reference(x),
                                "sim": lambda: simulated(x)}, args.repeats, args.device)
        ratio = {k: times["fp32"] / v for k, v in times.items()}
        print(f"{name:10s} {args.tokens / times['fp32']:12.0f} {ratio['ours']:7.2f}x {ratio['torchao']:7.2f}x "
              f"{ratio['sim']:7.2f}x   real vs simulated rel. error {error:.1e}")


if __name__ == "__main__":
    main()
