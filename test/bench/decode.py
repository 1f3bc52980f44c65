"""Decoding speed: our KV-cached batch_score against ESPnet's HuggingfaceOPTModel.

Both score the same tiny OPT (our model copies ESPnet's weights) for a 300-token greedy
generation of a small beam-like batch, calling batch_score once per token exactly as
ESPnet's BatchBeamSearch does. ESPnet's model re-runs the whole prefix at every step; ours
feeds only the new token. Prints tokens per second and the speed-up (target >= 5x).

    python test/bench/decode.py [--tokens 300] [--batch 4] [--device cpu|cuda]
"""

import argparse
import tempfile
import time

import torch
from transformers import OPTConfig, OPTForCausalLM

from espnet2.lm.huggingface_pretrained_opt_lm import HuggingfaceOPTModel
from sofa_speechlm.lm.causal_lm import SofaCausalLM

VOCAB = 1000


@torch.no_grad()
def greedy_tokens_per_second(lm, args) -> tuple:
    ys = torch.full((args.batch, 1), VOCAB - 1, dtype=torch.long, device=args.device)
    states = [None] * args.batch
    if args.device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.tokens):
        logp, states = lm.batch_score(ys, states, None)
        ys = torch.cat([ys, logp.argmax(dim=-1, keepdim=True)], dim=1)
    if args.device == "cuda":
        torch.cuda.synchronize()
    return args.tokens * args.batch / (time.perf_counter() - start), ys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--tokens", type=int, default=300)
    parser.add_argument("--batch", type=int, default=4)
    args = parser.parse_args()
    config = dict(hidden_size=args.hidden, word_embed_proj_dim=args.hidden, num_hidden_layers=args.layers,
                  num_attention_heads=args.hidden // 64, ffn_dim=4 * args.hidden, max_position_embeddings=2048)
    with tempfile.TemporaryDirectory() as directory:
        OPTForCausalLM(OPTConfig(**config, vocab_size=VOCAB)).save_pretrained(directory)
        espnet_lm = HuggingfaceOPTModel(VOCAB, directory)
        espnet_lm.reload_pretrained_parameters()
        results = {"espnet HuggingfaceOPTModel": greedy_tokens_per_second(espnet_lm.to(args.device).eval(), args)}
        for attention in ("softmax", "sofa"):
            ours = SofaCausalLM(VOCAB, pretrained=directory, attention=attention)
            # Same weights as ESPnet's model: decoder, embedding, head.
            ours.model.model.decoder.load_state_dict(espnet_lm.decoder.decoder.state_dict())
            ours.model.lm_head.weight = espnet_lm.lm_head.weight
            results[f"ours kv-cached ({attention})"] = greedy_tokens_per_second(ours.to(args.device).eval(), args)
    baseline, baseline_tokens = results["espnet HuggingfaceOPTModel"]
    print(f"tiny OPT hidden {args.hidden} x {args.layers} layers, {args.tokens} tokens x batch {args.batch}, {args.device}")
    for name, (speed, tokens) in results.items():
        same = "same tokens" if torch.equal(tokens, baseline_tokens) else "different tokens"
        print(f"  {name:28s} {speed:9.1f} tokens/s  speed-up {speed / baseline:6.2f}x  ({same})")
    print(f"speed-up of KV-cached batch_score (softmax): {results['ours kv-cached (softmax)'][0] / baseline:.2f}x (target >= 5x)")


if __name__ == "__main__":
    main()
