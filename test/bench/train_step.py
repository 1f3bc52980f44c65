"""Training step of the SpeechLM with SOFA attention against vanilla softmax (HF SDPA).

Same tiny OPT (same weights), same batch; prints the median step time (forward, backward,
Adam step) and the peak training memory of each, and their ratio sofa / vanilla
(target <= 1.10 on CPU). Peak memory is CUDA's max_memory_allocated on a GPU; on CPU it is
the bytes of the tensors autograd saves for backward (the activations, which is where the
attention implementations differ), since torch does not track CPU allocations.

    python test/bench/train_step.py [--device cpu|cuda] [--length 512] [--batch 4]
"""

import argparse
import statistics
import time

import torch

from sofa_speechlm.lm.causal_lm import SofaCausalLM

VOCAB = 1000


def tiny_opt(hidden: int, layers: int) -> dict:
    return dict(
        model_type="opt", hidden_size=hidden, word_embed_proj_dim=hidden, num_hidden_layers=layers,
        num_attention_heads=hidden // 64, ffn_dim=4 * hidden, max_position_embeddings=2048, dropout=0.0,
    )


class SavedActivationBytes:
    """Peak bytes of tensors saved for backward during one forward (CPU memory proxy)."""

    def __init__(self):
        self.total = 0

    def pack(self, tensor):
        self.total += tensor.numel() * tensor.element_size()
        return tensor

    def __enter__(self):
        self.context = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda tensor: tensor)
        self.context.__enter__()
        return self

    def __exit__(self, *exc):
        self.context.__exit__(*exc)


def measure(attention: str, args, tokens: torch.Tensor) -> tuple:
    lm = SofaCausalLM(VOCAB, hf_config=tiny_opt(args.hidden, args.layers), attention=attention).to(args.device)
    optimizer = torch.optim.Adam(lm.parameters(), lr=1e-4)
    times, memory = [], 0
    for step in range(args.warmup + args.steps):
        if args.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        with SavedActivationBytes() as saved:
            logits, _ = lm(tokens[:, :-1], None)
            loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tokens[:, 1:])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if args.device == "cuda":
            torch.cuda.synchronize()
            memory = torch.cuda.max_memory_allocated()
        else:
            memory = saved.total
        if step >= args.warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times), memory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--steps", type=int, default=6)
    args = parser.parse_args()
    tokens = torch.randint(1, VOCAB - 1, (args.batch, args.length + 1), generator=torch.Generator().manual_seed(0))
    tokens = tokens.to(args.device)
    results = {attention: measure(attention, args, tokens) for attention in ("softmax", "sofa")}
    memory_kind = "CUDA peak allocated" if args.device == "cuda" else "saved activations"
    print(f"tiny OPT hidden {args.hidden} x {args.layers} layers, batch {args.batch} x {args.length} tokens, {args.device}")
    for attention, (seconds, memory) in results.items():
        print(f"  {attention:8s} step {seconds * 1000:8.1f} ms   {memory_kind} {memory / 2**20:8.1f} MiB")
    (vanilla_time, vanilla_memory), (sofa_time, sofa_memory) = results["softmax"], results["sofa"]
    print(f"step time ratio sofa/vanilla: {sofa_time / vanilla_time:.3f} (target <= 1.10)")
    print(f"peak memory ratio sofa/vanilla: {sofa_memory / vanilla_memory:.3f} (target <= 1.10)")


if __name__ == "__main__":
    main()
