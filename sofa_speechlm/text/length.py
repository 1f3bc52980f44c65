"""LM text lines longer than the LM can position: found before training and cut, dropped or refused.

ESPnet's LM task feeds a line of n BPE tokens as `<sos/eos> t1 .. tn` (n + 1 positions, the
targets `t1 .. tn <sos/eos>`), so a line fits when n + 1 <= max_position_embeddings. A longer
line is an IndexError in the middle of an epoch for learned positions (OPT) and an
out-of-context, memory-hungry batch for rotary ones (Qwen2, Llama). The rules:

    drop   leave the line out (the default: ESPnet recipes drop over-long utterances, and a
           cut ASR/TTS line would lose its target or end its units at an arbitrary point)
    cut    keep its first tokens (the text up to the last one that fits)
    error  refuse the whole file, listing every long line

Every long line is reported with its id and token count.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import sentencepiece as spm

from sofa_speechlm.text.lm_text import iter_lm_text

LONG_LINE_RULES = ("drop", "cut", "error")
DEFAULT_RULE = "drop"
ADDED_TOKENS = 1  # the <sos/eos> ESPnet puts before every line
SHOWN = 5  # long lines named in a log message or error
CHUNK = 1000  # lines tokenized together


class LongLinesError(ValueError):
    """Lines longer than the LM's positions, under the rule `error`."""


def max_line_tokens(max_positions: int) -> int:
    """The most BPE tokens of one LM text line an LM with `max_positions` positions takes."""
    if max_positions <= ADDED_TOKENS:
        raise ValueError(f"max_position_embeddings {max_positions}: too small for any line")
    return max_positions - ADDED_TOKENS


def check_rule(rule: str) -> str:
    if rule not in LONG_LINE_RULES:
        raise ValueError(f"--long_lines {rule}: expected one of {', '.join(LONG_LINE_RULES)}")
    return rule


@dataclass
class LengthReport:
    """What a length rule did to one set of lines."""

    max_tokens: int
    rule: str
    lines: int = 0
    long: list[tuple[str, int]] = field(default_factory=list)  # (id, tokens) of every long line
    cut_lengths: dict[str, int] = field(default_factory=dict)  # id -> tokens after the cut

    def describe(self, source: str) -> str:
        shown = ", ".join(f"{utt_id} ({tokens} tokens)" for utt_id, tokens in self.long[:SHOWN])
        more = f" and {len(self.long) - SHOWN} more" if len(self.long) > SHOWN else ""
        return (
            f"{source}: {len(self.long)} of {self.lines} lines are longer than {self.max_tokens} BPE tokens "
            f"(the LM's positions minus <sos/eos>): {shown}{more}"
        )

    def log(self, source: str, listing: str | Path | None = None) -> None:
        if not self.long:
            logging.info(f"{source}: all {self.lines} lines fit in {self.max_tokens} BPE tokens")
            return
        if self.rule == "error":
            return  # the error says it
        where = f"; all listed in {listing}" if listing else ""
        action = "dropped" if self.rule == "drop" else "cut to fit"
        logging.warning(f"{self.describe(source)}{where}; {action} (--long_lines {self.rule})")


def cut_text(processor: spm.SentencePieceProcessor, text: str, max_tokens: int) -> tuple[str, int]:
    """The longest prefix of `text` ending at a piece boundary that encodes to <= max_tokens pieces."""
    pieces = processor.encode(text, out_type="immutable_proto").pieces
    keep = min(max_tokens, len(pieces))
    while keep > 0:
        prefix = text[: pieces[keep - 1].end].rstrip()
        length = len(processor.encode(prefix))
        if length <= max_tokens:  # re-encoding a prefix may split it differently: check
            return prefix, length
        keep -= 1
    raise ValueError(f"no prefix of '{text[:40]}...' fits in {max_tokens} tokens")


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def limit_lines(
    lines: Iterable[tuple[str, str]], processor: spm.SentencePieceProcessor, max_tokens: int, rule: str, report: LengthReport
) -> Iterator[tuple[str, str]]:
    """(id, text) of the lines the rule keeps, cut where it cuts; every long line goes to `report`.

    Streams: lines are tokenized in chunks, so memory does not grow with the corpus. Under the
    rule `error` nothing is yielded after the first long line, but every line is still checked.
    """
    check_rule(rule)
    for chunk in _chunks(lines, CHUNK):
        lengths = [len(ids) for ids in processor.encode([text for _, text in chunk])]
        for (utt_id, text), length in zip(chunk, lengths):
            report.lines += 1
            if length <= max_tokens:
                if not report.long or rule != "error":
                    yield utt_id, text
                continue
            report.long.append((utt_id, length))
            if rule == "cut":
                text, report.cut_lengths[utt_id] = cut_text(processor, text, max_tokens)
                yield utt_id, text


def limit_lm_text(
    lm_text: str | Path,
    bpe_model: str | Path,
    max_tokens: int,
    rule: str,
    output_dir: str | Path,
    shape_file: str | Path | None = None,
) -> LengthReport:
    """Applies the rule to an `uttid text` file: `output_dir/text` (and `text_shape`, ESPnet's
    shape file with the same lines), and `output_dir/long_lines` (`uttid tokens` of each long line).

    Where no line is long, `text` and `text_shape` are links to the inputs. Raises
    LongLinesError under the rule `error` when a line is long (the listing is written first).
    """
    check_rule(rule)
    lm_text, output_dir = Path(lm_text), Path(output_dir)
    for source, name in ((lm_text, "text"), (shape_file, "text_shape")):
        target = output_dir / name
        if source is not None and target.is_file() and not target.is_symlink() and target.samefile(source):
            raise ValueError(f"{source}: the output {target} would overwrite it; choose another --output_dir")
    output_dir.mkdir(parents=True, exist_ok=True)
    processor = spm.SentencePieceProcessor(model_file=str(bpe_model))
    report = LengthReport(max_tokens, rule)
    text_out = output_dir / "text"
    tmp = output_dir / "text.tmp"
    with open(tmp, "w", encoding="utf-8") as stream:
        for utt_id, text in limit_lines(iter_lm_text(lm_text), processor, max_tokens, rule, report):
            stream.write(f"{utt_id} {text}\n")
    listing = output_dir / "long_lines"
    listing.write_text("".join(f"{utt_id} {tokens}\n" for utt_id, tokens in report.long), encoding="utf-8")
    report.log(str(lm_text), listing)
    if report.long and rule == "error":
        tmp.unlink()
        raise LongLinesError(f"{report.describe(str(lm_text))}; all listed in {listing}; --long_lines drop or cut handles them")
    outputs = [(tmp, lm_text, text_out)]
    if shape_file is not None:
        shape_tmp = output_dir / "text_shape.tmp"
        _limit_shape_file(Path(shape_file), shape_tmp, report)
        outputs.append((shape_tmp, Path(shape_file), output_dir / "text_shape"))
    for written, source, target in outputs:
        target.unlink(missing_ok=True)
        if report.long:
            written.replace(target)
        else:  # nothing changed: no copy of a corpus
            written.unlink()
            target.symlink_to(source.resolve())
    return report


def _limit_shape_file(shape_file: Path, output: Path, report: LengthReport) -> None:
    """ESPnet's `uttid length` shape file without the dropped lines and with the cut lengths."""
    long_ids = {utt_id for utt_id, _ in report.long}
    seen = set()
    with open(output, "w", encoding="utf-8") as stream:
        for utt_id, length in iter_lm_text(shape_file):
            if utt_id in long_ids:
                seen.add(utt_id)
                if report.rule != "cut":
                    continue
                length = str(report.cut_lengths[utt_id])
            stream.write(f"{utt_id} {length}\n")
    if seen != long_ids:
        missing = sorted(long_ids - seen)
        raise ValueError(f"{shape_file}: no shape for {len(missing)} lines of the LM text (first: {missing[0]}): "
                         "is it the shape file of this text? (rerun stage 4's statistics)")


def limit_token_ids(
    token_ids: Sequence[Sequence[int]], max_tokens: int, rule: str, names: Sequence[str] | None = None
) -> tuple[list[int], LengthReport]:
    """The same rule on tokenized lines: (indices of the kept lines, report); cut lines are
    the first `max_tokens` ids (the caller slices them). Lines are named by `names` or
    their line number."""
    check_rule(rule)
    report = LengthReport(max_tokens, rule, lines=len(token_ids))
    kept = []
    for index, ids in enumerate(token_ids):
        if len(ids) > max_tokens:
            report.long.append((names[index] if names else f"line {index + 1}", len(ids)))
            if rule != "cut":
                continue
        kept.append(index)
    if report.long and rule == "error":
        raise LongLinesError(f"{report.describe('token ids')}; drop or cut them (long_lines)")
    return kept, report
