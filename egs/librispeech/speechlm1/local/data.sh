#!/usr/bin/env bash
# Stage 1 of the LibriSpeech recipe: data dirs from a local copy of the corpus (db.sh).
set -euo pipefail

datadir=data                       # output root
seed=777                           # samples the LM sentences
fs=16000                           # sampling rate (LibriSpeech is 16 kHz)
nj=2                               # unused here; accepted for the stage contract
train_sets="train-clean-100"       # training subsets
dev_set=dev-clean                  # development subset
test_set=test-clean                # test subset
num_lm_sentences=0                 # LM-corpus sentences for textLM (0: all)

help_message="Usage: $0 [--datadir data] [--train_sets 'train-clean-100 train-clean-360'] ..."
. ./db.sh
. "${SOFA_ROOT}/local/parse_options.sh"

if [ ! -d "${LIBRISPEECH}" ]; then
    echo "$0: LibriSpeech not found at '${LIBRISPEECH}'; set LIBRISPEECH in db.sh or the environment" >&2
    exit 1
fi
python -m sofa_speechlm.bin.prepare_librispeech --corpus_dir "${LIBRISPEECH}" --datadir "${datadir}" \
    --fs "${fs}" --train_sets "${train_sets}" --dev_set "${dev_set}" --test_set "${test_set}" \
    ${LIBRISPEECH_LM_TEXT:+--lm_text "${LIBRISPEECH_LM_TEXT}"} --num_lm_sentences "${num_lm_sentences}" --seed "${seed}"
