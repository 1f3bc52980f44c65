"""Batched prompt continuation with a KV cache: greedy and beam search over many utterances at once.

The search is ESPnet's BatchBeamSearch with the LM as sole scorer (lm/generate.py), run for a
batch of prompts together instead of one utterance at a time: every step takes the
`beam_size` best one-token extensions of each utterance's running hypotheses by summed
log-probability; an extension ending in `<sos/eos>` leaves the beam as a finished hypothesis,
the others keep their slot; at `max_new_tokens` the running hypotheses end as they are. The
best finished hypothesis is the output. An utterance stops early once a finished
hypothesis scores at least as well as every running one: scores only fall, so ESPnet's
answer cannot change after that point.

Finished hypotheses keep only their tokens; the one KV cache (lm/kv_cache.py) follows the
running hypotheses, so its memory is that of the live beams.

Prompts are `<sos/eos> prompt` left-padded to a common length with an attention mask and
explicit positions (so padding shifts neither OPT's nor Qwen2's position embeddings).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch

from sofa_speechlm.lm.kv_cache import BeamCache

PAD_ID = 0  # <blank>; never attended to


@dataclass
class Hypothesis:
    tokens: list[int]  # continuation without <sos/eos>
    score: float  # summed log-probability (the <sos/eos> step included when it ended by itself)


class BatchDecoder:
    """Decodes many prompts with one causal LM (`model(input_ids, attention_mask, position_ids,
    past_key_values, use_cache).logits`, as HF models and stage-5 quantized models are)."""

    def __init__(self, model: torch.nn.Module, sos_eos: int, batch_size: int = 16):
        if batch_size < 1:
            raise ValueError(f"batch_size {batch_size}: expected >= 1")
        self.model = model
        self.sos_eos = sos_eos
        self.batch_size = batch_size
        self.device = next(model.parameters()).device
        self.max_positions = getattr(model.config, "max_position_embeddings", None)

    def decode(self, prompts: Sequence[Sequence[int]], beam_size: int = 1, max_new_tokens: int = 300) -> list[Hypothesis]:
        """The best continuation of every prompt (token ids after `<sos/eos> prompt`)."""
        if beam_size < 1:
            raise ValueError(f"beam_size {beam_size}: expected >= 1")
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens {max_new_tokens}: expected >= 1")
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]), reverse=True)
        results: list[Hypothesis | None] = [None] * len(prompts)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            for index, hypothesis in zip(chunk, self._decode_batch([prompts[i] for i in chunk], beam_size, max_new_tokens)):
                results[index] = hypothesis
        return results

    def _forward(self, input_ids, attention_mask, position_ids, cache):
        output = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            past_key_values=cache, use_cache=True, logits_to_keep=1)
        return output.logits[:, -1].float().log_softmax(dim=-1), output.past_key_values

    @torch.inference_mode()
    def _decode_batch(self, prompts, beam_size: int, max_new_tokens: int) -> list[Hypothesis]:
        n, beam, device = len(prompts), beam_size, self.device
        sequences = [[self.sos_eos, *p] for p in prompts]
        length = max(len(s) for s in sequences)
        if self.max_positions is not None and length + max_new_tokens > self.max_positions:
            raise ValueError(
                f"a prompt of {length} tokens plus max_new_tokens {max_new_tokens} exceeds the model's "
                f"{self.max_positions} positions; lower max_new_tokens"
            )
        input_ids = torch.full((n, length), PAD_ID, dtype=torch.long)
        mask = torch.zeros((n, length), dtype=torch.long)
        for row, sequence in enumerate(sequences):
            input_ids[row, length - len(sequence) :] = torch.tensor(sequence)
            mask[row, length - len(sequence) :] = 1
        input_ids, mask = input_ids.to(device), mask.to(device)
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        cache = BeamCache()
        logp, _ = self._forward(input_ids, mask, positions, cache)
        # Every utterance gets `beam` slots (rows utt * beam + slot); only slot 0 is live at first.
        rows = torch.arange(n, device=device).repeat_interleave(beam)
        cache.select_rows(rows)
        logp, mask = logp[rows], mask[rows]
        next_position = positions[rows, -1] + 1
        scores = torch.full((n, beam), float("-inf"), device=device)
        scores[:, 0] = 0.0
        generated = torch.zeros((n * beam, 0), dtype=torch.long, device=device)
        active = list(range(n))  # utterance index of each live group of `beam` rows
        finished: list[list[tuple[float, list[int]]]] = [[] for _ in range(n)]
        vocab = logp.size(-1)
        for step in range(max_new_tokens):
            groups = len(active)
            candidates = (scores.unsqueeze(-1) + logp.view(groups, beam, vocab)).view(groups, beam * vocab)
            top_scores, top_index = candidates.topk(beam, dim=1)
            source_slot, tokens = top_index // vocab, top_index % vocab
            source_rows = (torch.arange(groups, device=device).unsqueeze(1) * beam + source_slot).view(-1)
            generated = torch.cat([generated[source_rows], tokens.view(-1, 1)], dim=1)
            ended = tokens == self.sos_eos
            last_step = step == max_new_tokens - 1
            top_scores_list, ended_list, generated_list = top_scores.tolist(), ended.tolist(), None
            keep = []
            for group, utterance in enumerate(active):
                for slot in range(beam):
                    score = top_scores_list[group][slot]
                    if score == float("-inf"):
                        continue
                    if ended_list[group][slot] or last_step:
                        if generated_list is None:
                            generated_list = generated.tolist()
                        tokens_of = generated_list[group * beam + slot]
                        if ended_list[group][slot]:
                            tokens_of = tokens_of[:-1]
                        finished[utterance].append((score, tokens_of))
                running = [s for s, e in zip(top_scores_list[group], ended_list[group]) if not e and s != float("-inf")]
                best_finished = max((s for s, _ in finished[utterance]), default=float("-inf"))
                if not last_step and running and not (finished[utterance] and best_finished >= max(running)):
                    keep.append(group)
            if not keep:
                break
            top_scores = top_scores.masked_fill(ended, float("-inf"))
            keep_t = torch.tensor(keep, device=device)
            kept_rows = (keep_t.unsqueeze(1) * beam + torch.arange(beam, device=device)).view(-1)
            select = source_rows[kept_rows]
            cache.select_rows(select)
            scores = top_scores[keep_t]
            generated = generated[kept_rows]
            mask = torch.cat([mask[select], torch.ones((len(select), 1), dtype=mask.dtype, device=device)], dim=1)
            next_position = next_position[select]
            active = [active[g] for g in keep]
            logp, _ = self._forward(generated[:, -1:], mask, next_position.unsqueeze(1), cache)
            next_position = next_position + 1
        results = []
        for utterance in range(n):
            score, tokens = max(finished[utterance], key=lambda item: item[0])
            results.append(Hypothesis(tokens, score))
        return results
