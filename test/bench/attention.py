"""Benchmark: forward+backward time and peak memory of every attention normalizer vs torch SDPA.

B=1, H=12, D=64, causal, fp32 on CPU (or --device cuda). Each (method, length) runs in a fresh
subprocess per measurement. Memory: the method's first call alone. On CPU it is the growth of
the peak RSS (VmHWM, reset through /proc/self/clear_refs) over the RSS just before the call,
inputs already allocated, with glibc's mmap threshold fixed so that freed tensors leave the RSS;
on CUDA it is torch.cuda.max_memory_allocated. Time (another process, default allocator): after
a warm-up, torch SDPA and the method alternate --repeats times and the best time of each is
kept, so each ratio compares runs from the same time window (the CPU here is shared and noisy).
Prints ratios against SDPA; asserts nothing about time.

    python test/bench/attention.py                       # L in 512..8192, a few minutes
    python test/bench/attention.py --lengths 1024 2048   # shorter
    python test/bench/attention.py --device cuda --check # compare fast vs eager first
"""
import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

FAST = ("softmax", "sofa", "softmax1")
EAGER_ONLY = ("sofa_l1", "sofa_meancenter", "clipped")


def _status_bytes(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} missing from /proc/self/status")


def measure(method, length, device, repeats, phase, heads=12, head_dim=64):
    """phase "memory": peak extra bytes of the method's first call; phase "time": (best seconds
    of the method, best seconds of SDPA in the same window) after a warm-up call."""
    import torch

    from sofa_speechlm.attention import cpu_kernel
    from sofa_speechlm.attention.functional import attend

    if device == "cpu":
        cpu_kernel.load()  # the shared library's own memory is no attention memory
    torch.manual_seed(0)
    q, k, v = (torch.randn(1, heads, length, head_dim, device=device, requires_grad=True) for _ in range(3))
    grad = torch.randn(1, heads, length, head_dim, device=device)

    def step(name):
        if name == "sdpa":
            out = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            normalizer, impl = name.split(":")
            out = attend(q, k, v, normalizer=normalizer, causal=True, impl=impl)
        out.backward(grad)
        q.grad = k.grad = v.grad = None
        if device == "cuda":
            torch.cuda.synchronize()

    if phase == "memory" and device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step(method)
        return max(torch.cuda.max_memory_allocated() - base, 0)
    if phase == "memory":
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")  # resets VmHWM to the current RSS
        base = _status_bytes("VmRSS")
        step(method)
        return max(_status_bytes("VmHWM") - base, 0)
    step(method)  # warm-up
    best = {method: float("inf"), "sdpa": float("inf")}
    for _ in range(repeats):
        for name in best:
            start = time.perf_counter()
            step(name)
            best[name] = min(best[name], time.perf_counter() - start)
    return best[method], best["sdpa"]


def check_against_eager(device):
    """Max error of the fast path against eager per normalizer, dtype and mask (outputs and grads)."""
    import torch

    from sofa_speechlm.attention.functional import attend
    from sofa_speechlm.attention.normalizers import FLASH_NORMALIZERS

    padding = torch.ones(2, 1, 1, 200, dtype=torch.bool, device=device)
    padding[1, ..., 150:] = False
    cases = {"causal": (200, True, None), "padding": (200, False, padding), "decode": (7, True, None)}
    worst = 0.0
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        for normalizer in FLASH_NORMALIZERS:
            for case, (q_len, causal, mask) in cases.items():
                gen = torch.Generator(device=device).manual_seed(0)
                q, k, v = (torch.randn(2, 3, n, 64, device=device, generator=gen).to(dtype) for n in (q_len, 200, 200))
                grad = torch.randn(2, 3, q_len, 64, device=device, generator=gen).to(dtype)
                results = []
                for impl in ("auto", "eager"):
                    inputs = [t.clone().requires_grad_() for t in (q, k, v)]
                    out = attend(*inputs, normalizer=normalizer, causal=causal, attn_mask=mask, impl=impl)
                    results.append([out, *torch.autograd.grad(out, inputs, grad)])
                errors = [
                    ((a.float() - b.float()).abs().max() / b.float().abs().max().clamp_min(1)).item()
                    for a, b in zip(*results)
                ]
                if dtype == torch.float32:
                    worst = max(worst, *errors)
                print(f"check {device} {str(dtype):<15} {normalizer:<9} {case:<8} rel.err out/dq/dk/dv "
                      + " ".join(f"{e:.1e}" for e in errors))
    print(f"check: worst fp32 relative error {worst:.1e}")


def run_isolated(method, length, args):
    """(best seconds, best SDPA seconds in the same window, peak bytes) from two fresh processes:
    one measures memory, one time (the memory one fixes glibc's mmap threshold, which slows
    allocation-heavy code, so timing runs with the default allocator)."""
    results = []
    for phase in ("memory", "time"):
        command = [sys.executable, __file__, "--child", method, str(length), phase, "--device", args.device,
                   "--repeats", str(args.repeats)]
        # glibc's default mmap threshold grows with freed blocks, so freed tensors would stay in the
        # heap and in RSS; a fixed threshold returns every large block to the OS when it is freed.
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"} if phase == "memory" else None
        done = subprocess.run(command, capture_output=True, text=True, check=False, env=env)
        if done.returncode != 0:
            lines = done.stderr.strip().splitlines()
            return None, f"failed: {lines[-1] if lines else done.returncode}"
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
    peak, (seconds, sdpa_seconds) = results
    return (seconds, sdpa_seconds, peak), None


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="+", default=[512, 1024, 2048, 4096, 8192])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds after the warm-up (best time kept)")
    parser.add_argument(
        "--eager_max_length", type=int, default=2048, help="longest L for the eager-only normalizers (they use L x L memory)"
    )
    parser.add_argument("--methods", nargs="+", help="only these NORMALIZER:IMPL methods (default: all)")
    parser.add_argument("--check", action="store_true", help="first compare the fast path with eager on --device")
    parser.add_argument("--child", nargs=3, metavar=("METHOD", "LENGTH", "PHASE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child[0], int(args.child[1]), args.device, args.repeats, args.child[2])))
        return
    if args.check:
        check_against_eager(args.device)

    methods = args.methods or [f"{n}:auto" for n in FAST] + ["sofa:eager"] + [f"{n}:eager" for n in EAGER_ONLY]
    threads = os.environ.get("OMP_NUM_THREADS", "torch default")
    print(f"device={args.device} threads={threads} B=1 H=12 D=64 causal fp32 fwd+bwd, best of {args.repeats}")
    print(f"{'L':>6} {'method':<22} {'time s':>9} {'SDPA s':>9} {'x SDPA':>7} {'peak MiB':>9} {'x SDPA':>7}")
    for length in args.lengths:
        sdpa, error = run_isolated("sdpa", length, args)
        if error:
            print(f"{length:>6} sdpa {error}")
            continue
        sdpa_peak = sdpa[2]
        print(f"{length:>6} {'torch SDPA (softmax)':<22} {sdpa[0]:>9.4f} {sdpa[1]:>9.4f} {1.0:>7.2f} "
              f"{sdpa_peak / 2**20:>9.1f} {1.0:>7.2f}", flush=True)
        for method in methods:
            if method.endswith(":eager") and length > args.eager_max_length:
                continue
            result, error = run_isolated(method, length, args)
            if error:
                print(f"{length:>6} {method:<22} {error}")
                continue
            seconds, sdpa_seconds, peak = result
            print(
                f"{length:>6} {method:<22} {seconds:>9.4f} {sdpa_seconds:>9.4f} {seconds / sdpa_seconds:>7.2f} "
                f"{peak / 2**20:>9.1f} {peak / max(sdpa_peak, 1):>7.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
