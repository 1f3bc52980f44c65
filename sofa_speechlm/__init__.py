"""sofa-speechlm: speech recipes for SOFA (Stabilized Outlier-Free Attention) SpeechLMs."""

__version__ = "0.1.0"
