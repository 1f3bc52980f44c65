"""Unit HiFi-GAN vocoder: HuBERT k-means units -> 16 kHz waveform (the SOFA paper's TTS back end)."""

from sofa_speechlm.vocoder.checkpoint import load_generator, save_published
from sofa_speechlm.vocoder.config import VocoderConfig, VocoderConfigError
from sofa_speechlm.vocoder.generator import CodeHiFiGANGenerator
from sofa_speechlm.vocoder.synthesis import UnitVocoder, load_vocoder, synthesize

__all__ = [
    "CodeHiFiGANGenerator", "VocoderConfig", "VocoderConfigError", "load_generator",
    "save_published", "synthesize", "UnitVocoder", "load_vocoder",
]
