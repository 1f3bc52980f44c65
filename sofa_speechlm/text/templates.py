"""Task templates of the joint LM text (design.md), with VoxtLM's four special tokens.

    textlm:   <generatetext> text
    speechlm: <generatespeech> units
    asr:      <startofspeech> units <generatetext> text
    tts:      <startoftext> text <generatespeech> units
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

from sofa_speechlm.text.unit_chars import chars_to_units, is_unit_char, units_to_chars

START_OF_SPEECH = "<startofspeech>"
START_OF_TEXT = "<startoftext>"
GENERATE_SPEECH = "<generatespeech>"
GENERATE_TEXT = "<generatetext>"
SPECIAL_TOKENS = (START_OF_SPEECH, START_OF_TEXT, GENERATE_SPEECH, GENERATE_TEXT)
# Which tokens introduce units and which introduce text.
SPEECH_MARKERS = (START_OF_SPEECH, GENERATE_SPEECH)
TEXT_MARKERS = (START_OF_TEXT, GENERATE_TEXT)

# task -> the ordered (special token, "units" | "text") parts of its template
TEMPLATES = {
    "textlm": ((GENERATE_TEXT, "text"),),
    "speechlm": ((GENERATE_SPEECH, "units"),),
    "asr": ((START_OF_SPEECH, "units"), (GENERATE_TEXT, "text")),
    "tts": ((START_OF_TEXT, "text"), (GENERATE_SPEECH, "units")),
}
TASKS = tuple(TEMPLATES)
_SPECIAL_SPLIT = re.compile("(" + "|".join(map(re.escape, SPECIAL_TOKENS)) + ")")


def needs(task: str) -> set[str]:
    """The inputs ('text', 'units') a task's template uses."""
    if task not in TEMPLATES:
        raise ValueError(f"unknown task '{task}' (expected one of {', '.join(TASKS)})")
    return {kind for _, kind in TEMPLATES[task]}


def check_text(text: str) -> str:
    """The text, refused when it would be mistaken for units or special tokens."""
    if any(is_unit_char(char) for char in text):
        raise ValueError(f"text contains characters of the unit block (U+4E00..U+9FFF): '{text[:60]}'")
    if _SPECIAL_SPLIT.search(text):
        raise ValueError(f"text contains a special token: '{text[:60]}'")
    return " ".join(text.split())


def format_task(task: str, text: str | None = None, units: Sequence[int] | None = None) -> str:
    """One LM text line (without uttid) of `task` from its text and/or unit ids."""
    needs(task)
    parts = []
    for token, kind in TEMPLATES[task]:
        if kind == "text":
            if text is None:
                raise ValueError(f"task {task} needs text")
            parts += [token, check_text(text)]
        else:
            if units is None or len(units) == 0:
                raise ValueError(f"task {task} needs units")
            parts += [token, units_to_chars(units)]
    return " ".join(parts)


@dataclass
class Segment:
    """What follows one special token: units (ids) or text."""

    token: str | None
    units: list[int] = field(default_factory=list)
    text: str = ""


def split_segments(line: str) -> list[Segment]:
    """Inverse of `format_task`: the special-token-led segments of an LM text line.

    Unit characters anywhere become units of their segment, other characters text; a part
    before any special token has token None.
    """
    segments = []
    token = None
    for piece in _SPECIAL_SPLIT.split(line):
        if piece in SPECIAL_TOKENS:
            token = piece
            continue
        if not piece.strip() and token is None:
            continue
        units = chars_to_units(piece)
        text = " ".join("".join(char for char in piece if not is_unit_char(char)).split())
        segments.append(Segment(token, units, text))
    return segments
