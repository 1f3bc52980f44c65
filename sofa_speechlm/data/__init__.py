"""Kaldi-style data dirs and the audio their wav.scp entries point to."""

from sofa_speechlm.data.audio import AudioError, audio_info, iter_utterances, load_audio
from sofa_speechlm.data.kaldi import DataDir, DataDirError, read_table, write_table

__all__ = ["AudioError", "DataDir", "DataDirError", "audio_info", "iter_utterances", "load_audio", "read_table", "write_table"]
