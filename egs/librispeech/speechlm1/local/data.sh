#!/usr/bin/env bash
# Stage 1 of the LibriSpeech recipe with the paper's data (VoxtLM's mix): textLM from the
# LibriSpeech LM corpus, speechLM from Libri-Light, ASR from LibriSpeech 960 h + MLS English,
# TTS from LibriTTS + VCTK, the vocoder's data from LJSpeech. Corpus roots: db.sh.
# Each list is corpus:subset items (corpora: python -m sofa_speechlm.bin.prepare_corpus --help).
set -euo pipefail

data_dir=data                       # output root: ${data_dir}/{train,dev,test}/{textlm,speechlm,asr,tts}, ${data_dir}/vocoder
seed=777                            # samples the LM sentences
fs=16000                            # sampling rate of every wav.scp entry (other rates go through sox)
nj=4                                # parallel audio-header reads
textlm_train="librispeech_lm:lm"    # textLM training text (paper: the 40M-sentence LM corpus)
textlm_dev="librispeech:dev-clean"  # textLM dev text (transcripts)
textlm_test="librispeech:test-clean"  # textLM test text (transcripts)
speechlm_train="librilight:small librilight:medium librilight:large"  # speechLM training audio (paper: all of Libri-Light)
speechlm_dev="librispeech:dev-clean"  # speechLM dev audio
speechlm_test="librispeech:test-clean"  # speechLM test audio (speech PPL)
asr_train="librispeech:train-clean-100 librispeech:train-clean-360 librispeech:train-other-500 mls_en:train"  # ASR training pairs
asr_dev="librispeech:dev-clean"     # ASR dev pairs (dev-other is prepared on request: add librispeech:dev-other)
asr_test="librispeech:test-clean"   # ASR test pairs (WER); e.g. "librispeech:test-other" for the other condition
tts_train="libritts:train-clean-100 libritts:train-clean-360 libritts:train-other-500 vctk:all"  # TTS training pairs
tts_dev="libritts:dev-clean"        # TTS dev pairs
tts_test="libritts:test-clean"      # TTS test pairs (CER)
vocoder_sets="ljspeech:all"         # the vocoder's training audio -> ${data_dir}/vocoder (paper: LJSpeech at 16 kHz); empty: none
num_lm_sentences=0                  # LM-corpus sentences sampled for textLM (0: all)
check_audio=header                  # header: every file's header is read (unreadable/empty files left out); decode: every sample (slow)
resample=true                       # audio at another rate than fs: true resamples via sox in wav.scp, false stops
segment_method=vad                  # Libri-Light: vad (its json's voice activity) or fixed windows
segment_length=20                   # Libri-Light: longest utterance, seconds

help_message="Usage: $0 [--data_dir data] [--asr_train 'librispeech:train-clean-100'] [--option value ...]"
. ./path.sh
. "${SOFA_ROOT}/local/parse_options.sh"
. ./db.sh
. ./scripts/data_from_corpora.sh
