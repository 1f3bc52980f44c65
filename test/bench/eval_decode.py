"""Decoding speed of stage 6: batched KV-cached prompt continuation (sofa_speechlm.eval.decoding)
against the per-utterance path of bin.lm_inference (ESPnet's BatchBeamSearch over one prompt at a
time, lm/generate.py), on the same model and prompts. Prints tokens per second, the speed-up
(target >= 5x at batch 16 on CPU) and whether both produced the same hypotheses.

    python test/bench/eval_decode.py [--exp_dir exp/lm_tiny_sofa_full --prompts dump/lm_text/test/asr.txt]
                                     [--utts 32] [--batch 16] [--beam 1] [--max_new_tokens 100]

Without --exp_dir it uses a random model of conf/lm/tiny_sofa_full.yaml's size.
"""

import argparse
import time
from pathlib import Path

import torch
import yaml

from sofa_speechlm.eval.decoding import BatchDecoder
from sofa_speechlm.lm.causal_lm import SofaCausalLM
from sofa_speechlm.lm.generate import PromptContinuation

REPO = Path(__file__).resolve().parents[2]


def load(args):
    """(AbsLM for ESPnet's search, HF model for ours, token list, prompts as id lists)."""
    if args.exp_dir:
        from sofa_speechlm.eval.prompts import read_prompts
        from sofa_speechlm.lm.experiment import LMExperiment
        from sofa_speechlm.tasks.lm import SofaLMTask
        from sofa_speechlm.text.tokenizer import JointTokenizer

        experiment = LMExperiment.find(args.exp_dir)
        model, train_args = SofaLMTask.build_model_from_file(experiment.train_config, experiment.model_file, args.device)
        tokenizer = JointTokenizer(train_args.bpemodel, train_args.token_list)
        prompts = read_prompts(args.prompts, tokenizer, args.utts).prompts
        return model.eval().lm, train_args.token_list, prompts
    config = yaml.safe_load((REPO / "conf/lm/tiny_sofa_full.yaml").read_text())["lm_conf"]
    vocab = 1000
    lm = SofaCausalLM(vocab, hf_config=config["hf_config"], attention=config["attention"]).to(args.device).eval()
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(2, vocab - 1, (int(n),), generator=g).tolist()
               for n in torch.randint(20, 60, (args.utts,), generator=g)]
    return lm, [f"t{i}" for i in range(vocab - 1)] + ["<sos/eos>"], prompts


def timed(function):
    start = time.perf_counter()
    result = function()
    return result, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp_dir", default=None, help="a trained stage-4 experiment (default: a random tiny model)")
    parser.add_argument("--prompts", default="dump/lm_text/test/asr.txt", help="LM text of the prompts (with --exp_dir)")
    parser.add_argument("--utts", type=int, default=32)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--beam", type=int, default=1)
    parser.add_argument("--max_new_tokens", type=int, default=100)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    lm, token_list, prompts = load(args)
    sos_eos = len(token_list) - 1
    search = PromptContinuation(lm, token_list, args.beam, args.max_new_tokens)
    espnet, espnet_s = timed(lambda: [search(p) for p in prompts])
    ours, ours_s = timed(lambda: BatchDecoder(lm.model, sos_eos, args.batch).decode(prompts, args.beam, args.max_new_tokens))
    espnet_tokens = sum(len(tokens) + 1 for tokens, _ in espnet)
    ours_tokens = sum(len(h.tokens) + 1 for h in ours)
    same = sum(h.tokens == tokens for h, (tokens, _) in zip(ours, espnet))
    print(f"{len(prompts)} prompts, beam {args.beam}, max_new_tokens {args.max_new_tokens}, {args.device}, "
          f"{torch.get_num_threads()} threads, model {args.exp_dir or 'random tiny (conf/lm/tiny_sofa_full.yaml)'}")
    print(f"  ESPnet per-utterance (bin.lm_inference path) {espnet_tokens / espnet_s:9.1f} tokens/s  ({espnet_s:.2f} s)")
    print(f"  stage 6 batched, batch {args.batch:<3d}               {ours_tokens / ours_s:9.1f} tokens/s  ({ours_s:.2f} s)")
    print(f"speed-up {(ours_tokens / ours_s) / (espnet_tokens / espnet_s):.2f}x (target >= 5x at batch 16 on CPU); "
          f"same hypotheses for {same} of {len(prompts)} prompts")


if __name__ == "__main__":
    main()
