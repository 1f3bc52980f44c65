"""JointTokenizer: task text <-> sentencepiece pieces <-> ESPnet token ids, and back to units and text.

Stage 4 (LM) and evaluation use it to encode prompts exactly as stage 3 wrote the LM text and
to turn generated pieces back into unit ids (for the vocoder) and text (for WER/CER).
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import sentencepiece as spm

from sofa_speechlm.text.bpe import SOS_EOS, UNK, token_list
from sofa_speechlm.text.templates import Segment, format_task, split_segments


class JointTokenizer:
    """One sentencepiece model over text and unit characters, with the ESPnet token list."""

    def __init__(self, bpe_model: str | Path, tokens: str | Path | Sequence[str] | None = None):
        if not Path(bpe_model).is_file():
            raise FileNotFoundError(f"{bpe_model}: sentencepiece model not found (stage 3 writes it)")
        self.processor = spm.SentencePieceProcessor(model_file=str(bpe_model))
        if tokens is None:
            tokens = token_list(self.processor)
        elif isinstance(tokens, (str, Path)):
            tokens = Path(tokens).read_text(encoding="utf-8").split("\n")[:-1]
        self.tokens = list(tokens)
        self.token_ids = {token: index for index, token in enumerate(self.tokens)}
        self.unk_id = self.token_ids[UNK]
        self.sos_eos_id = self.token_ids[SOS_EOS]

    def tokenize(self, line: str) -> list[str]:
        """Pieces of an LM text line (as ESPnet's sentencepiece tokenizer splits it)."""
        return self.processor.encode(line, out_type=str)

    def encode(self, task: str, text: str | None = None, units: Sequence[int] | None = None) -> list[str]:
        """Pieces of one task's template filled with `text` and/or `units`."""
        return self.tokenize(format_task(task, text, units))

    def pieces_to_ids(self, pieces: Sequence[str]) -> list[int]:
        return [self.token_ids.get(piece, self.unk_id) for piece in pieces]

    def ids_to_pieces(self, ids: Sequence[int]) -> list[str]:
        return [self.tokens[index] for index in ids]

    def detokenize(self, pieces: Sequence[str]) -> str:
        """The LM text line of `pieces`; ESPnet-only tokens (<blank>, <sos/eos>) are dropped."""
        known = [piece for piece in pieces if self.processor.piece_to_id(piece) != self.processor.unk_id() or piece == UNK]
        return self.processor.decode_pieces(known)

    def decode(self, pieces: Sequence[str]) -> list[Segment]:
        """The special-token-led segments (unit ids or text) of generated pieces."""
        return split_segments(self.detokenize(pieces))

    def decode_ids(self, ids: Sequence[int]) -> list[Segment]:
        return self.decode(self.ids_to_pieces(ids))
