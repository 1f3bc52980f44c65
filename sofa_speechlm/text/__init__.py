"""The joint speech-text vocabulary: unit characters, task templates, sentencepiece, token list."""

from sofa_speechlm.text.templates import SPECIAL_TOKENS, TASKS, Segment, format_task, split_segments
from sofa_speechlm.text.tokenizer import JointTokenizer
from sofa_speechlm.text.unit_chars import chars_to_units, units_to_chars

__all__ = ["JointTokenizer", "SPECIAL_TOKENS", "Segment", "TASKS", "chars_to_units", "format_task", "split_segments", "units_to_chars"]
