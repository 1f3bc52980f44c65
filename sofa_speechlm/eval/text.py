"""Text normalization and error rates (WER, CER) for ASR and TTS scoring.

References and hypotheses go through Whisper's EnglishTextNormalizer (the `whisper_en`
cleaner of ESPnet's evaluate_asr.sh) before jiwer counts edits, so casing, punctuation,
spelled-out numbers and British spellings do not count as errors. Rates are corpus-level
(total edits / total reference words or characters), in percent.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import jiwer


@functools.lru_cache(maxsize=1)
def _normalizer():
    from whisper.normalizers import EnglishTextNormalizer

    return EnglishTextNormalizer()


def normalize(text: str) -> str:
    """Whisper's English normalization: lowercase, no punctuation, standard spellings and numbers."""
    return " ".join(_normalizer()(text).split())


@dataclass
class ErrorCounts:
    """Edit counts of a scored set; `rate` is (sub + del + ins) / reference length in percent."""

    unit: str  # "word" or "char"
    utterances: int
    reference_length: int
    hits: int
    substitutions: int
    deletions: int
    insertions: int
    sentence_errors: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def rate(self) -> float:
        if self.reference_length == 0:
            raise ValueError("every reference is empty after normalization: no error rate can be computed")
        return 100.0 * self.errors / self.reference_length


def _check(refs: Sequence[str], hyps: Sequence[str]) -> None:
    if len(refs) != len(hyps):
        raise ValueError(f"{len(refs)} references but {len(hyps)} hypotheses")
    if not refs:
        raise ValueError("no utterances to score")


def align(refs: Sequence[str], hyps: Sequence[str], unit: str = "word", normalized: bool = False):
    """(ErrorCounts, per-utterance (ref tokens, hyp tokens, jiwer alignment chunks)).

    Empty references are allowed (their hypothesis words are insertions), empty hypotheses
    are all deletions. Characters include the spaces between words (fairseq's convention).
    """
    _check(refs, hyps)
    if unit not in ("word", "char"):
        raise ValueError(f"unit '{unit}': expected word or char")
    if not normalized:
        refs, hyps = [normalize(r) for r in refs], [normalize(h) for h in hyps]
    split = str.split if unit == "word" else list
    counts = ErrorCounts(unit, len(refs), 0, 0, 0, 0, 0, 0)
    details = []
    for ref, hyp in zip(refs, hyps):
        ref_tokens, hyp_tokens = split(ref), split(hyp)
        if ref_tokens:
            output = (jiwer.process_words if unit == "word" else jiwer.process_characters)(ref, hyp)
            chunks = output.alignments[0]
            counts.hits += output.hits
            counts.substitutions += output.substitutions
            counts.deletions += output.deletions
            counts.insertions += output.insertions
        else:
            chunks = [jiwer.AlignmentChunk(type="insert", ref_start_idx=0, ref_end_idx=0,
                                           hyp_start_idx=0, hyp_end_idx=len(hyp_tokens))] if hyp_tokens else []
            counts.insertions += len(hyp_tokens)
        counts.reference_length += len(ref_tokens)
        utterance_errors = sum(max(c.ref_end_idx - c.ref_start_idx, c.hyp_end_idx - c.hyp_start_idx)
                               for c in chunks if c.type != "equal")
        counts.sentence_errors += utterance_errors > 0
        details.append((ref_tokens, hyp_tokens, chunks))
    return counts, details


def wer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus word error rate in percent on Whisper-normalized text."""
    return align(refs, hyps, "word")[0].rate


def cer(refs: Sequence[str], hyps: Sequence[str]) -> float:
    """Corpus character error rate in percent on Whisper-normalized text (spaces count)."""
    return align(refs, hyps, "char")[0].rate


def _alignment_rows(ref_tokens, hyp_tokens, chunks, unit: str) -> tuple[str, str, str]:
    """sclite-style REF/HYP/Eval lines: deletions and insertions shown as stars."""
    ref_row, hyp_row, eval_row = [], [], []
    for chunk in chunks:
        ref_part = ref_tokens[chunk.ref_start_idx : chunk.ref_end_idx]
        hyp_part = hyp_tokens[chunk.hyp_start_idx : chunk.hyp_end_idx]
        for index in range(max(len(ref_part), len(hyp_part))):
            r = ref_part[index] if index < len(ref_part) else ""
            h = hyp_part[index] if index < len(hyp_part) else ""
            if unit == "char":
                r, h = r.replace(" ", "_"), h.replace(" ", "_")
            label = {"equal": "", "substitute": "S", "delete": "D", "insert": "I"}[chunk.type]
            if chunk.type == "equal":
                r, h = r.lower(), h.lower()
            else:
                r, h = (r or "*").upper(), (h or "*").upper()
            width = max(len(r), len(h), len(label))
            ref_row.append(r.ljust(width))
            hyp_row.append(h.ljust(width))
            eval_row.append(label.ljust(width))
    return " ".join(ref_row), " ".join(hyp_row), " ".join(eval_row)


def write_score_dir(
    score_dir: str | Path,
    utt_ids: Sequence[str],
    refs: Sequence[str],
    hyps: Sequence[str],
    unit: str = "word",
    title: str = "",
) -> ErrorCounts:
    """ESPnet's score_wer/ (or score_cer/) layout: ref.trn, hyp.trn (normalized, `text (uttid)`)
    and result.txt with the summary table and every utterance's alignment."""
    refs_n, hyps_n = [normalize(r) for r in refs], [normalize(h) for h in hyps]
    counts, details = align(refs_n, hyps_n, unit, normalized=True)
    score_dir = Path(score_dir)
    score_dir.mkdir(parents=True, exist_ok=True)
    for name, texts in (("ref.trn", refs_n), ("hyp.trn", hyps_n)):
        (score_dir / name).write_text("".join(f"{t} ({u})\n" for u, t in zip(utt_ids, texts)), encoding="utf-8")
    n = max(counts.reference_length, 1)
    lines = [
        f"{title}  ({unit} level, Whisper EnglishTextNormalizer, jiwer)".strip(),
        "",
        "|dataset|Snt|Wrd|Corr|Sub|Del|Ins|Err|S.Err|" if unit == "word" else "|dataset|Snt|Chr|Corr|Sub|Del|Ins|Err|S.Err|",
        "|---|---|---|---|---|---|---|---|---|",
        f"|{title or 'test'}|{counts.utterances}|{counts.reference_length}|{100 * counts.hits / n:.1f}|"
        f"{100 * counts.substitutions / n:.1f}|{100 * counts.deletions / n:.1f}|{100 * counts.insertions / n:.1f}|"
        f"{100 * counts.errors / n:.1f}|{100 * counts.sentence_errors / max(counts.utterances, 1):.1f}|",
        "",
    ]
    for utt_id, (ref_tokens, hyp_tokens, chunks) in zip(utt_ids, details):
        ref_row, hyp_row, eval_row = _alignment_rows(ref_tokens, hyp_tokens, chunks, unit)
        lines += [f"id: ({utt_id})", f"REF:  {ref_row}", f"HYP:  {hyp_row}", f"Eval: {eval_row}", ""]
    (score_dir / "result.txt").write_text("\n".join(lines), encoding="utf-8")
    return counts
