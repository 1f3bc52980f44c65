#!/usr/bin/env bash
# sofa-speechlm recipe driver: one SOFA (or vanilla) SpeechLM for textLM, speechLM, ASR and TTS.
# From the repo root it runs the embedded default (a mini corpus made offline with espeak-ng).
# Per-corpus recipes under egs/ call it with their own data script and options.
set -euo pipefail

log() {
    local fname=${BASH_SOURCE[1]##*/}
    echo -e "$(date '+%Y-%m-%dT%H:%M:%S') (${fname}:${BASH_LINENO[0]}:${FUNCNAME[1]}) $*" >&2
}

# General
stage=1                 # first stage to run (1 data, 2 tokenizer, 3 vocab, 4 lm, 5 ptq, 6 eval)
stop_stage=6            # last stage to run
skip_stages=""          # stages to skip, e.g. "2 5"
nj=2                    # parallel jobs for data-parallel steps
seed=777                # random seed of every stage
datadir=data            # Kaldi data dirs: ${datadir}/{train,dev,test}/{textlm,speechlm,asr,tts}
dumpdir=dump            # features, units, LM text
expdir=exp              # models and results
fs=16000                # sampling rate of every wav
# Stage 1: data
data_script=local/mini_corpus/data.sh  # corpus preparation script: writes the data dirs
# Stage 2: speech tokenizer and vocoder
hubert_ckpt=""          # fairseq .pt or HuggingFace dir of HuBERT; MFCC features when empty
layer=6                 # HuBERT layer whose output is clustered (fairseq output_layer)
nclusters=200           # k-means clusters (unit vocabulary size)
kmeans_percent=1.0      # fraction of training utterances used to learn k-means
vocoder_file=""         # a trained unit vocoder checkpoint; trained in stage 2 when empty
vocoder_config=conf/vocoder/tiny.yaml  # vocoder training config
# Stage 3: joint vocabulary
nbpe=1000               # sentencepiece vocabulary size over text and units
bpemode=unigram         # sentencepiece model type: unigram or bpe
# Stage 4: language model
lm_configs="conf/lm/tiny_sofa_full.yaml conf/lm/tiny_vanilla_full.yaml"  # LM configs, one experiment each
pretrained_lm=""        # local HuggingFace dir of the pretrained text LM; config's choice when empty
ngpu=0                  # GPUs for training (ESPnet's --ngpu)
# Stage 5: post-training quantization
ptq_methods="rtn smoothquant"  # PTQ methods: rtn smoothquant affinequant omniquant
ptq_bits="W8A8 W4A4"    # PTQ settings: W8A8 W4A4 W4A16
# Stage 6: evaluation
whisper_model=""        # openai-whisper checkpoint for TTS CER; CER is skipped when empty

help_message="Usage: $0 [--stage N] [--stop_stage M] [--option value ...]
Runs the sofa-speechlm recipe stages N..M (see README.md)."

# Shared scripts live beside this file; data, dump and exp are relative to the working
# directory (the repo root or an egs/<corpus>/speechlm1 recipe that links this file).
sofa_root=$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")
. "${sofa_root}/path.sh"
if [ -f ./cmd.sh ]; then . ./cmd.sh; else . "${sofa_root}/cmd.sh"; fi
. "${sofa_root}/local/parse_options.sh"

# A stage runs when it lies in [stage, stop_stage] and is not skipped. Its marker holds the
# options it ran with: a finished stage is skipped on a rerun unless those options changed.
wants_stage() {
    [ "$1" -ge "${stage}" ] && [ "$1" -le "${stop_stage}" ] && [[ " ${skip_stages} " != *" $1 "* ]]
}
marker() { echo "${expdir}/.done/stage$1"; }
stage_finished() { [ -f "$(marker "$1")" ] && [ "$(cat "$(marker "$1")")" == "$2" ]; }
finish_stage() { mkdir -p "${expdir}/.done"; echo "$2" > "$(marker "$1")"; }
not_implemented() { log "ERROR: stage $1 ($2) is not implemented yet"; exit 1; }

splits="train dev test"
speech_tasks="speechlm asr tts"

if wants_stage 1; then
    settings="data_script=${data_script} seed=${seed} fs=${fs}"
    if stage_finished 1 "${settings}"; then
        log "Stage 1: data dirs already complete in ${datadir}; skipping"
    else
        log "Stage 1: data preparation with ${data_script} into ${datadir}"
        "${data_script}" --datadir "${datadir}" --seed "${seed}" --fs "${fs}" --nj "${nj}"
        for split in ${splits}; do
            validate_data_dir.sh --require text "${datadir}/${split}/textlm"
            validate_data_dir.sh --fs "${fs}" --require wav.scp "${datadir}/${split}/speechlm"
            for task in asr tts; do
                validate_data_dir.sh --fs "${fs}" --require "wav.scp text" "${datadir}/${split}/${task}"
            done
        done
        finish_stage 1 "${settings}"
        log "Stage 1: data dirs are in ${datadir}/{${splits// /,}}/{textlm,${speech_tasks// /,}}"
    fi
fi

if wants_stage 2; then
    # Stage 2a: speech units (features, k-means, a units file in every speech data dir)
    not_implemented 2 "speech units"
    # Stage 2b: unit vocoder (trained on the train split's wavs and units unless --vocoder_file)
    not_implemented 2 "unit vocoder"
fi

if wants_stage 3; then
    not_implemented 3 "joint vocabulary"
fi

if wants_stage 4; then
    not_implemented 4 "language model training"
fi

if wants_stage 5; then
    not_implemented 5 "post-training quantization"
fi

if wants_stage 6; then
    not_implemented 6 "evaluation"
fi

log "Successfully finished stages ${stage}-${stop_stage}"
