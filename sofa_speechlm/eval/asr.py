"""ASR scoring: decode `<startofspeech> units <generatetext>` prompts, WER against the references."""

from __future__ import annotations

import logging
from pathlib import Path

from sofa_speechlm.data.kaldi import write_table
from sofa_speechlm.eval.decoding import BatchDecoder
from sofa_speechlm.eval.prompts import PromptSet, hypothesis_text
from sofa_speechlm.eval.text import write_score_dir
from sofa_speechlm.text.tokenizer import JointTokenizer


def score_asr(
    decoder: BatchDecoder,
    tokenizer: JointTokenizer,
    prompts: PromptSet,
    output_dir: str | Path,
    beam_size: int,
    max_new_tokens: int,
) -> dict:
    """Writes output_dir/{text,score} and output_dir/score_wer/; returns {wer, empty, counts}."""
    output_dir = Path(output_dir)
    hypotheses = decoder.decode(prompts.prompts, beam_size, max_new_tokens)
    texts = [hypothesis_text(tokenizer, h.tokens) for h in hypotheses]
    empty = sum(not t.strip() for t in texts)
    if empty:
        logging.warning(f"ASR: {empty} of {len(texts)} hypotheses are empty (scored as deletions)")
    write_table(output_dir / "text", dict(zip(prompts.utt_ids, texts)))
    write_table(output_dir / "score", {u: f"{h.score:.4f}" for u, h in zip(prompts.utt_ids, hypotheses)})
    counts = write_score_dir(output_dir / "score_wer", prompts.utt_ids, prompts.references, texts, "word", "asr test")
    logging.info(f"ASR WER {counts.rate:.2f}% on {counts.utterances} utterances ({output_dir / 'score_wer/result.txt'})")
    return {"wer": counts.rate, "empty_hypotheses": empty}
