"""Stage 6: metrics (perplexity, WER, CER), batched decoding, Whisper, outlier statistics and
reports of the SpeechLMs (submodules load lazily)."""

from sofa_speechlm.eval.drop import performance_drop

__all__ = ["performance_drop"]
