"""Continuation of task prompts with ESPnet's (batch) beam search and the LM as sole scorer.

A prompt is a task line cut after its generate token (`<startofspeech> units
<generatetext>` asks for the transcript, `<startoftext> text <generatespeech>` for units);
the search starts from `<sos/eos> prompt` exactly as the LM saw sequences in training and
stops at `<sos/eos>`.
"""

import logging
from typing import List, Sequence, Tuple

import torch

from espnet.nets.batch_beam_search import BatchBeamSearch
from espnet.nets.scorers.length_bonus import LengthBonus
from espnet2.lm.abs_model import AbsLM
from sofa_speechlm.lm.espnet_model import GENERATE_TOKENS


def split_prompt(line: str, generate_tokens: Sequence[str] = GENERATE_TOKENS) -> Tuple[str, str]:
    """(prompt up to and including the first generate token, the rest as reference)."""
    found = [(line.index(t), t) for t in generate_tokens if t in line]
    if not found:
        return line, ""
    start, token = min(found)
    cut = start + len(token)
    return line[:cut], line[cut:].strip()


class PromptContinuation:
    """Beam search over one LM, reused for many prompts."""

    def __init__(
        self,
        lm: AbsLM,
        token_list: List[str],
        beam_size: int,
        max_new_tokens: int,
        min_new_tokens: int = 0,
        length_bonus: float = 0.0,
    ):
        """`length_bonus` is added per token (ESPnet's LengthBonus): it offsets the search's
        preference for short hypotheses, which an undertrained LM shows by ending early."""
        if not 0 <= min_new_tokens <= max_new_tokens:
            raise ValueError(f"min_new_tokens {min_new_tokens}: expected 0..max_new_tokens ({max_new_tokens})")
        self.sos_eos = len(token_list) - 1
        self.max_new_tokens = max_new_tokens
        self.min_new_tokens = min_new_tokens
        scorers, weights = dict(lm=lm), dict(lm=1.0)
        if length_bonus:
            scorers["length_bonus"], weights["length_bonus"] = LengthBonus(len(token_list)), length_bonus
        self.search = BatchBeamSearch(
            scorers=scorers,
            weights=weights,
            beam_size=beam_size,
            vocab_size=len(token_list),
            sos=self.sos_eos,
            eos=self.sos_eos,
            token_list=token_list,
            pre_beam_score_key="full",
        )
        self.search.eval()

    @torch.no_grad()
    def __call__(self, prompt_ids: Sequence[int]) -> Tuple[List[int], float]:
        """The best continuation (token ids, without <sos/eos>) of `prompt_ids` and its score."""
        primer = [self.sos_eos, *prompt_ids]
        self.search.set_hyp_primer(primer)
        device = next(self.search.full_scorers["lm"].parameters()).device
        # The LM ignores the encoder input; the search only needs a tensor to decode "for".
        dummy_encoder_output = torch.zeros(1, 1, device=device)
        # Negative ratios are absolute lengths for ESPnet's search.
        hyps = self.search(
            dummy_encoder_output, maxlenratio=-float(self.max_new_tokens), minlenratio=-float(self.min_new_tokens)
        )
        if not hyps:
            logging.warning(f"every hypothesis ended before min_new_tokens={self.min_new_tokens}; empty output")
            return [], float("-inf")
        best = hyps[0]
        tokens = best.yseq[len(primer):].tolist()
        if tokens and tokens[-1] == self.sos_eos:
            tokens = tokens[:-1]
        return tokens, float(best.score)
