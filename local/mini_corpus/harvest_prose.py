#!/usr/bin/env python3
"""Harvests English prose sentences for the embedded mini corpus from CPython's own
documentation (pydoc_data topics and standard-library docstrings, PSF license).

Run once with CPython 3.11 to (re)make local/mini_corpus/prose.txt; the recipe reads the
committed file, so the corpus does not change with the Python patch version.
Kept: sentences of 5-22 plain words (letters, apostrophes, hyphens, commas and semicolons),
starting with a capital letter and ending with a period.
"""

import ast
import re
import sys
from pathlib import Path

import pydoc_data.topics

SENTENCE = re.compile(r"[A-Z][a-z]*( [A-Za-z][a-z'-]*[,;]?)*[a-z]\.")


def docstrings(library: Path):
    for path in sorted(library.glob("**/*.py")):
        if "test" in path.parts or "site-packages" in path.parts or "idlelib" in path.parts:
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
                text = ast.get_docstring(node)
                if text:
                    yield text


def sentences(texts):
    for text in texts:
        for paragraph in re.split(r"\n\s*\n", text):
            paragraph = " ".join(paragraph.split())
            for sentence in re.split(r"(?<=[.!?])\s+(?=[A-Z])", paragraph):
                if 5 <= len(sentence.split()) <= 22 and SENTENCE.fullmatch(sentence):
                    yield sentence


def main():
    library = Path(ast.__file__).parent
    texts = [*pydoc_data.topics.topics.values(), *docstrings(library)]
    unique = sorted(set(sentences(texts)))
    output = Path(__file__).with_name("prose.txt")
    output.write_text("".join(f"{sentence}\n" for sentence in unique), encoding="utf-8")
    print(f"{output}: {len(unique)} sentences (Python {sys.version.split()[0]})")


if __name__ == "__main__":
    main()
