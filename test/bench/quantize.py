"""Benchmark: wall time and peak memory of each PTQ method on an OPT-125m-sized random model,
so users can plan OPT-1.3b runs (time scales roughly with parameters x calibration tokens).

Model: OPT-125m shapes (hidden 768, 12 layers, 12 heads, FFN 3072) with a 1,000-token joint
vocabulary, SOFA attention, fp32. Each (method, setting) runs in a fresh subprocess that builds
the model and random calibration batches, then quantizes; the quantization time is measured
alone, and the memory is the growth of the peak RSS (VmHWM, reset through /proc/self/clear_refs)
during quantize() over the RSS before it. The baseline printed with each row is one FP forward
over the same calibration tokens in the same process. Hyperparameters: the `methods:` section of
--ptq_config (default conf/ptq/tiny.yaml, the reduced ones; conf/ptq/paper.yaml for the paper's).
Asserts nothing.

    python test/bench/quantize.py [--methods rtn smoothquant] [--settings W8A8 W4A4] \\
        [--nsamples 8] [--seqlen 256] [--layers 12] [--ptq_config conf/ptq/paper.yaml]
"""
import argparse
import json
import os
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)


def _status_bytes(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"{field} missing")


def measure(method, setting, args):
    import torch
    import yaml
    from transformers import OPTConfig, OPTForCausalLM

    from sofa_speechlm.attention import apply_attention
    from sofa_speechlm.quant import make_config, quantize

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = OPTConfig(vocab_size=1000, hidden_size=768, num_hidden_layers=args.layers, ffn_dim=3072,
                       num_attention_heads=12, word_embed_proj_dim=768, max_position_embeddings=2048, dropout=0.0)
    model = apply_attention(OPTForCausalLM(config).eval(), "sofa")
    batches = [torch.randint(1, 1000, (min(args.batch_size, args.nsamples - i), args.seqlen))
               for i in range(0, args.nsamples, args.batch_size)]
    hyper = (yaml.safe_load(open(args.ptq_config)).get("methods") or {}).get(method) or {}
    quant_config = make_config(method, setting, **hyper)
    with torch.no_grad():
        start = time.perf_counter()
        for batch in batches:
            model(batch, use_cache=False)
        forward_s = time.perf_counter() - start
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM to the current RSS
    before = _status_bytes("VmRSS")
    start = time.perf_counter()
    quantize(model, quant_config, batches)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "forward_s": forward_s, "peak_extra_mb": (_status_bytes("VmHWM") - before) / 2**20,
            "model_mb": sum(p.numel() * 4 for p in model.parameters()) / 2**20}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=None, help="default: every registered method")
    parser.add_argument("--settings", nargs="+", default=["W8A8", "W4A4"])
    parser.add_argument("--nsamples", type=int, default=8)
    parser.add_argument("--seqlen", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--ptq_config", default=os.path.join(REPO, "conf/ptq/tiny.yaml"))
    parser.add_argument("--child", nargs=2, metavar=("METHOD", "SETTING"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child, args)))
        return
    if args.methods is None:
        from sofa_speechlm.quant import method_names

        args.methods = list(method_names())
    print(f"OPT-125m shapes, {args.layers} layers, calibration {args.nsamples} x {args.seqlen} tokens, "
          f"{args.threads} thread(s), hyperparameters from {args.ptq_config}")
    print(f"{'variant':24s} {'seconds':>9s} {'x FP forward':>13s} {'peak extra MB':>14s}")
    passthrough = [a for a in sys.argv[1:] if a not in ("--methods", "--settings", *args.methods, *args.settings)]
    for method in args.methods:
        for setting in args.settings:
            result = subprocess.run([sys.executable, __file__, "--child", method, setting, *passthrough],
                                    capture_output=True, text=True, env={**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"})
            if result.returncode:
                print(f"{method}_{setting.lower():18s} failed: {result.stderr.strip().splitlines()[-1]}")
                continue
            r = json.loads(result.stdout.strip().splitlines()[-1])
            print(f"{method + '_' + setting.lower():24s} {r['seconds']:9.2f} {r['seconds'] / r['forward_s']:12.1f}x "
                  f"{r['peak_extra_mb']:14.0f}   (model {r['model_mb']:.0f} MB, FP forward {r['forward_s']:.2f} s)")


if __name__ == "__main__":
    main()
