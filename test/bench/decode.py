"""Decoding speed: our KV-cached batch_score (softmax and SOFA) against ESPnet's HuggingfaceOPTModel.

All three score the same random OPT (ours copy ESPnet's weights) for a greedy generation of a
small beam-like batch, calling batch_score once per token exactly as ESPnet's BatchBeamSearch
does (with --reorder, the hypotheses are also shuffled each step as a beam reorders them).
ESPnet's model re-runs the whole prefix at every step; ours feeds only the new token. ESPnet
runs once (it is slow); ours alternate softmax and sofa --repeats times and the medians count.
Prints tokens per second in wall-clock and in process CPU time (the latter is less disturbed
by other processes on a shared machine), the speed-ups (target >= 5x) and sofa / softmax
(target >= 0.95).

    python test/bench/decode.py [--tokens 300] [--batch 4] [--hidden 256] [--layers 4]
                                [--repeats 5] [--num_threads 1] [--reorder] [--device cpu|cuda]
"""

import argparse
import statistics
import tempfile
import time

import torch
from transformers import OPTConfig, OPTForCausalLM

from espnet2.lm.huggingface_pretrained_opt_lm import HuggingfaceOPTModel
from sofa_speechlm.lm.causal_lm import SofaCausalLM

VOCAB = 1000


def _synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


@torch.no_grad()
def greedy_decode(lm, args) -> tuple:
    """(tokens/s wall, tokens/s CPU time, generated ids) of one greedy decode."""
    ys = torch.full((args.batch, 1), VOCAB - 1, dtype=torch.long, device=args.device)
    states = [None] * args.batch
    shuffle = torch.Generator().manual_seed(0)
    _synchronize(args.device)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(args.tokens):
        if args.reorder and states[0] is not None:
            order = torch.randint(0, args.batch, (args.batch,), generator=shuffle).tolist()
            ys, states = ys[order], [states[i] for i in order]
        logp, states = lm.batch_score(ys, states, None)
        ys = torch.cat([ys, logp.argmax(dim=-1, keepdim=True)], dim=1)
    _synchronize(args.device)
    tokens = args.tokens * args.batch
    return tokens / (time.perf_counter() - wall), tokens / (time.process_time() - cpu), ys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--hidden", type=int, default=256, help="hidden size (heads of 64)")
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=300)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=5, help="decodes per attention (medians are reported)")
    parser.add_argument("--num_threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--reorder", action="store_true", help="shuffle the hypotheses every step, as a beam does")
    args = parser.parse_args()
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    config = dict(hidden_size=args.hidden, word_embed_proj_dim=args.hidden, num_hidden_layers=args.layers,
                  num_attention_heads=args.hidden // 64, ffn_dim=4 * args.hidden, max_position_embeddings=2048)
    with tempfile.TemporaryDirectory() as directory:
        OPTForCausalLM(OPTConfig(**config, vocab_size=VOCAB)).save_pretrained(directory)
        espnet_lm = HuggingfaceOPTModel(VOCAB, directory).to(args.device).eval()
        espnet_lm.reload_pretrained_parameters()
        ours = {}
        for attention in ("softmax", "sofa"):
            lm = SofaCausalLM(VOCAB, pretrained=directory, attention=attention)
            # Same weights as ESPnet's model: decoder, embedding, head.
            lm.model.model.decoder.load_state_dict(espnet_lm.decoder.decoder.state_dict())
            lm.model.lm_head.weight = espnet_lm.lm_head.weight
            ours[attention] = lm.to(args.device).eval()
    short = argparse.Namespace(**{**vars(args), "tokens": 8})
    for lm in ours.values():
        greedy_decode(lm, short)  # warm-up: builds the fused kernel once, first-call allocations
    baseline_wall, baseline_cpu, baseline_tokens = greedy_decode(espnet_lm, args)
    runs = {attention: [] for attention in ours}
    for _ in range(args.repeats):
        for attention, lm in ours.items():
            runs[attention].append(greedy_decode(lm, args))

    print(f"OPT hidden {args.hidden} x {args.layers} layers, {args.tokens} tokens x batch {args.batch}, {args.device}, "
          f"{torch.get_num_threads()} thread(s){', reordered every step' if args.reorder else ''}; "
          f"medians of {args.repeats}")
    print(f"  {'espnet HuggingfaceOPTModel':28s} {baseline_wall:8.1f} tokens/s wall {baseline_cpu:8.1f} tokens/s CPU")
    medians = {}
    for attention, results in runs.items():
        wall = statistics.median(r[0] for r in results)
        cpu = statistics.median(r[1] for r in results)
        medians[attention] = (wall, cpu)
        same = all(torch.equal(r[2], results[0][2]) for r in results)
        reference = "same tokens as espnet" if torch.equal(results[0][2], baseline_tokens) else "other tokens than espnet"
        print(f"  {'ours kv-cached (' + attention + ')':28s} {wall:8.1f} tokens/s wall {cpu:8.1f} tokens/s CPU  "
              f"speed-up {wall / baseline_wall:6.2f}x wall {cpu / baseline_cpu:6.2f}x CPU  "
              f"({reference}{'' if same else ', NOT deterministic'})")
    (softmax_wall, softmax_cpu), (sofa_wall, sofa_cpu) = medians["softmax"], medians["sofa"]
    print(f"sofa / softmax: {sofa_wall / softmax_wall:.3f} wall, {sofa_cpu / softmax_cpu:.3f} CPU (target >= 0.95); "
          f"speed-up over espnet: softmax {softmax_wall / baseline_wall:.2f}x, sofa {sofa_wall / baseline_wall:.2f}x "
          f"wall (target >= 5x)")


if __name__ == "__main__":
    main()
