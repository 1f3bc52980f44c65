"""The corpora the recipes know: one entry each, with what differs between them."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from sofa_speechlm.data.corpora.base import CorpusNotFound, Recording, Report
from sofa_speechlm.data.corpora.librilight import read_librilight
from sofa_speechlm.data.corpora.librispeech import LM_TEXT_NAMES, read_librispeech, read_lm_text
from sofa_speechlm.data.corpora.libritts import read_libritts
from sofa_speechlm.data.corpora.ljspeech import read_ljspeech
from sofa_speechlm.data.corpora.mls import read_mls
from sofa_speechlm.data.corpora.vctk import read_vctk


@dataclass(frozen=True)
class Corpus:
    name: str
    db_var: str                 # db.sh variable: the directory holding the corpus' top folder
    tops: tuple[str, ...]       # the corpus' own top folder names ("" = the directory itself)
    markers: tuple[str, ...]    # glob patterns of which one matches inside a real top folder
    fs: int                     # published sampling rate (0: text only)
    subsets: tuple[str, ...]    # the published subsets (the default of --subsets)
    layout: str                 # the expected layout, for messages
    read: Callable[[Path, str, Report, object], Iterator[Recording]]

    def find_root(self, corpus_dir: str | Path | None = None) -> Path:
        """The corpus' top folder under corpus_dir (or corpus_dir itself when it is one);
        corpus_dir defaults to the environment variable `db_var` (db.sh exports it)."""
        if not corpus_dir:
            corpus_dir = os.environ.get(self.db_var, "")
            if not corpus_dir:
                raise CorpusNotFound(f"{self.name}: no corpus directory given and {self.db_var} is not set; set {self.db_var} in db.sh (or the environment) to the directory that holds {' or '.join(t for t in self.tops if t)}, laid out as {self.layout}")
        corpus_dir = Path(corpus_dir)
        if self.fs == 0 and corpus_dir.is_file():
            return corpus_dir
        for candidate in [corpus_dir / top for top in self.tops] + [corpus_dir]:
            if candidate.is_dir() and any(next(candidate.glob(marker), None) for marker in self.markers):
                return candidate
        tops = " or ".join(dict.fromkeys(f"{corpus_dir}/{top}" if top else str(corpus_dir) for top in self.tops))
        raise CorpusNotFound(
            f"{self.name} not found under '{corpus_dir}': expected {tops} (or '{corpus_dir}' being that folder) laid out as {self.layout}. "
            f"Set {self.db_var} in db.sh (or the environment) to the directory that holds it."
        )


CORPORA = {
    corpus.name: corpus
    for corpus in (
        Corpus("librispeech", "LIBRISPEECH", ("LibriSpeech",), ("*/*/*/*.trans.txt",), 16000,
               ("train-clean-100", "train-clean-360", "train-other-500", "dev-clean", "dev-other", "test-clean", "test-other"),
               "<subset>/<speaker>/<chapter>/<speaker>-<chapter>-<n>.flac with <speaker>-<chapter>.trans.txt", read_librispeech),
        Corpus("librispeech_lm", "LIBRISPEECH_LM_TEXT", ("LibriSpeech",), tuple(LM_TEXT_NAMES), 0, ("lm",),
               f"{' or '.join(LM_TEXT_NAMES)} (one normalized sentence a line; or give the file itself)", read_lm_text),
        Corpus("librilight", "LIBRILIGHT", ("librilight", ""), ("*/*/*/*.flac",), 16000, ("small", "medium", "large"),
               "<subset>/<speaker>/<book>/<name>.flac with <name>.json (subsets small, medium, large)", read_librilight),
        Corpus("mls_en", "MLS", ("mls_english", "mls_english_opus"), ("*/transcripts.txt",), 16000, ("train", "dev", "test"),
               "<subset>/transcripts.txt and <subset>/audio/<speaker>/<book>/<speaker>_<book>_<n>.flac (or .opus)", read_mls),
        Corpus("libritts", "LIBRITTS", ("LibriTTS", "LibriTTS_R"), ("*/*/*/*.normalized.txt",), 24000,
               ("train-clean-100", "train-clean-360", "train-other-500", "dev-clean", "dev-other", "test-clean", "test-other"),
               "<subset>/<speaker>/<chapter>/<speaker>_<chapter>_<n>_<m>.wav with .normalized.txt", read_libritts),
        Corpus("vctk", "VCTK", ("VCTK-Corpus-0.92", "VCTK-Corpus", ""), ("txt/*/*.txt",), 48000, ("all",),
               "txt/<speaker>/<speaker>_<n>.txt with wav48_silence_trimmed/<speaker>/<speaker>_<n>_mic1.flac (0.92) or wav48/<speaker>/<speaker>_<n>.wav (0.80)", read_vctk),
        Corpus("ljspeech", "LJSPEECH", ("LJSpeech-1.1",), ("metadata.csv",), 22050, ("all",),
               "metadata.csv (id|text|normalized text) and wavs/<id>.wav", read_ljspeech),
    )
}


def get_corpus(name: str) -> Corpus:
    if name not in CORPORA:
        raise ValueError(f"unknown corpus '{name}'; known: {', '.join(CORPORA)}")
    return CORPORA[name]
