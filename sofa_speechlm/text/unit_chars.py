"""Unit ids as single characters, so that one sentencepiece model covers text and speech.

Unit u is the code point U+4E00 + u (CJK Unified Ideographs, the block ESPnet's discrete-unit
recipes use): NFKC, and so sentencepiece's default normalisation, leaves these characters
unchanged, and the mapping is invertible for up to 20992 units.
"""

from __future__ import annotations

from typing import Iterable

UNIT_CHAR_BASE = 0x4E00
MAX_UNITS = 0x9FFF - UNIT_CHAR_BASE + 1


def is_unit_char(char: str) -> bool:
    return UNIT_CHAR_BASE <= ord(char) < UNIT_CHAR_BASE + MAX_UNITS


def units_to_chars(units: Iterable[int]) -> str:
    """[3, 17, 17] -> '七丑丑'; ids must lie in 0..MAX_UNITS-1."""
    chars = []
    for unit in units:
        if not 0 <= unit < MAX_UNITS:
            raise ValueError(f"unit id {unit} cannot be written as a character (expected 0..{MAX_UNITS - 1})")
        chars.append(chr(UNIT_CHAR_BASE + unit))
    return "".join(chars)


def chars_to_units(chars: str) -> list[int]:
    """Unit ids of the unit characters in `chars`, in order; other characters are skipped."""
    return [ord(char) - UNIT_CHAR_BASE for char in chars if is_unit_char(char)]
