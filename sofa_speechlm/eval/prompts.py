"""Test prompts and references from stage 3's LM text, and decoded tokens back to text or units."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from sofa_speechlm.data.kaldi import read_table, sort_key
from sofa_speechlm.lm.generate import split_prompt
from sofa_speechlm.text.templates import split_segments
from sofa_speechlm.text.tokenizer import JointTokenizer


@dataclass
class PromptSet:
    """Prompts (token ids up to and including the generate token) and the reference after it."""

    utt_ids: list[str]
    prompts: list[list[int]]
    references: list[str]  # the LM text after the generate token (text, or unit characters)
    prompt_texts: list[str]
    total: int  # utterances in the file (before --max_utts)


def read_prompts(path: str | Path, tokenizer: JointTokenizer, max_utts: int = 0) -> PromptSet:
    """The first `max_utts` (0: all) utterances of an LM text file by sorted id.

    Lines without anything after their generate token have no reference: refused, naming them.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: test LM text not found (stage 3 writes dump/lm_text/<split>/<task>.txt)")
    lines = read_table(path)
    if not lines:
        raise ValueError(f"{path}: no utterances")
    utt_ids = sorted(lines, key=sort_key)
    total = len(utt_ids)
    if max_utts > 0:
        utt_ids = utt_ids[:max_utts]
    prompts, references, prompt_texts, missing = [], [], [], []
    for utt_id in utt_ids:
        prompt, reference = split_prompt(lines[utt_id])
        if not reference:
            missing.append(utt_id)
        prompt_texts.append(prompt)
        prompts.append(tokenizer.pieces_to_ids(tokenizer.tokenize(prompt)))
        references.append(reference)
    if missing:
        raise ValueError(
            f"{path}: {len(missing)} utterances have no reference after their generate token "
            f"(first: {missing[0]}); a test set needs references to be scored"
        )
    return PromptSet(utt_ids, prompts, references, prompt_texts, total)


def prompt_text(prompt: str) -> str:
    """The text of a TTS prompt `<startoftext> text <generatespeech>`."""
    return " ".join(segment.text for segment in split_segments(prompt) if segment.text)


def hypothesis_text(tokenizer: JointTokenizer, ids: Sequence[int]) -> str:
    """The words of a generated continuation up to any special token (unit characters dropped)."""
    segments = tokenizer.decode_ids(ids)
    return segments[0].text if segments and segments[0].token is None else ""


def hypothesis_units(tokenizer: JointTokenizer, ids: Sequence[int], num_units: int, utt_id: str = "") -> list[int]:
    """The unit ids of a generated continuation up to any special token; ids >= num_units dropped."""
    segments = tokenizer.decode_ids(ids)
    units = segments[0].units if segments and segments[0].token is None else []
    kept = [u for u in units if u < num_units]
    if len(kept) < len(units):
        logging.warning(f"{utt_id}: {len(units) - len(kept)} generated units >= {num_units} (vocoder size) dropped")
    return kept
