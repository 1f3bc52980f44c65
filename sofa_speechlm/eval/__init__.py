"""Stage 6: metrics (perplexity, WER, CER), batched decoding, Whisper, scoring of one model."""
