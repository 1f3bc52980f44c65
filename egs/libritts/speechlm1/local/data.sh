#!/usr/bin/env bash
# Stage 1 of the LibriTTS recipe: all four tasks from LibriTTS (585 h at 24 kHz, resampled to
# 16 kHz by sox pipes) -- textLM from its transcripts, speechLM, ASR and TTS from its audio --
# and the vocoder's data from LJSpeech, as the paper trains its HiFi-GAN. Corpus roots: db.sh.
# Each list is corpus:subset items (corpora: python -m sofa_speechlm.bin.prepare_corpus --help).
set -euo pipefail

data_dir=data                       # output root: ${data_dir}/{train,dev,test}/{textlm,speechlm,asr,tts}, ${data_dir}/vocoder
seed=777                            # samples the LM sentences (when librispeech_lm is listed)
fs=16000                            # sampling rate of every wav.scp entry (other rates go through sox)
nj=4                                # parallel audio-header reads
train_sets="libritts:train-clean-100 libritts:train-clean-360 libritts:train-other-500"  # training subsets of every task
textlm_train=""                     # textLM training text (empty: the transcripts of train_sets)
textlm_dev="libritts:dev-clean"     # textLM dev text
textlm_test="libritts:test-clean"   # textLM test text
speechlm_train=""                   # speechLM training audio (empty: train_sets)
speechlm_dev="libritts:dev-clean"   # speechLM dev audio
speechlm_test="libritts:test-clean" # speechLM test audio (speech PPL)
asr_train=""                        # ASR training pairs (empty: train_sets)
asr_dev="libritts:dev-clean"        # ASR dev pairs
asr_test="libritts:test-clean"      # ASR test pairs (WER)
tts_train=""                        # TTS training pairs (empty: train_sets; the paper adds vctk:all)
tts_dev="libritts:dev-clean"        # TTS dev pairs
tts_test="libritts:test-clean"      # TTS test pairs (CER)
vocoder_sets="ljspeech:all"         # the vocoder's training audio -> ${data_dir}/vocoder (paper: LJSpeech at 16 kHz); empty: none
num_lm_sentences=0                  # LM-corpus sentences sampled for textLM (0: all)
check_audio=header                  # header: every file's header is read (unreadable/empty files left out); decode: every sample (slow)
resample=true                       # audio at another rate than fs: true resamples via sox in wav.scp, false stops
segment_method=vad                  # Libri-Light (when listed): vad (its json's voice activity) or fixed windows
segment_length=20                   # Libri-Light (when listed): longest utterance, seconds

help_message="Usage: $0 [--data_dir data] [--train_sets 'libritts:train-clean-100'] [--option value ...]"
. ./path.sh
. "${SOFA_ROOT}/local/parse_options.sh"
. ./db.sh
textlm_train=${textlm_train:-${train_sets}}
speechlm_train=${speechlm_train:-${train_sets}}
asr_train=${asr_train:-${train_sets}}
tts_train=${tts_train:-${train_sets}}
. ./scripts/data_from_corpora.sh
