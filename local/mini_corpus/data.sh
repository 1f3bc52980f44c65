#!/usr/bin/env bash
# Stage 1 of the embedded default: English prose (local/mini_corpus/prose.txt) spoken by
# eight espeak-ng voices, written as Kaldi data dirs under ${data_dir}.
set -euo pipefail

data_dir=data           # output root
seed=777                # chooses and splits the sentences
fs=16000                # sampling rate
nj=2                    # parallel espeak-ng processes
num_text=2500           # textLM sentences over train/dev/test (80/10/10)
num_spoken=500          # spoken utterances over train/dev/test (a subset of the textLM sentences)

help_message="Usage: $0 [--data_dir data] [--seed 777] ..."
. "${SOFA_ROOT}/local/parse_options.sh"

python -m sofa_speechlm.bin.make_mini_corpus --sentences "${SOFA_ROOT}/local/mini_corpus/prose.txt" \
    --data_dir "${data_dir}" --seed "${seed}" --fs "${fs}" --nj "${nj}" \
    --num_text "${num_text}" --num_spoken "${num_spoken}"
