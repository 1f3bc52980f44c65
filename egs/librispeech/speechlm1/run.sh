#!/usr/bin/env bash
# LibriSpeech SpeechLM recipe with the paper's data and settings: textLM on the LibriSpeech LM
# corpus, speechLM on Libri-Light, ASR on LibriSpeech 960 h + MLS English, TTS on LibriTTS + VCTK
# (local/data.sh); HuBERT-base layer-6 units (k=200); a joint BPE of 10k; SOFA vs vanilla OPT-350m
# with LoRA (rank 256) on one GPU; the paper's PTQ settings; stage 6 with the paper's decoding
# options (conf/decode/paper.sh: beam 5, full test sets, WHISPER_MODEL as the TTS CER's judge).
# Set the corpus roots in db.sh (or the environment) and the local checkpoints below; any option
# of speechlm.sh (the shared driver, ../../../run.sh) can be appended and wins.
set -euo pipefail

hubert_ckpt=${HUBERT_CKPT:-}            # e.g. hubert_base_ls960.pt (fairseq) or a HF HuBERT dir (MFCC units when empty)
pretrained_lm=${PRETRAINED_LM:-}        # e.g. a local copy of facebook/opt-350m (the config's model when empty)
. conf/decode/paper.sh                   # decode_opts: stage 6's options (reads WHISPER_MODEL: the Whisper judge of the TTS CER; tools/models/whisper-tiny.en when empty)

./speechlm.sh \
    --data_script local/data.sh \
    --hubert_ckpt "${hubert_ckpt}" \
    --layer 6 \
    --nclusters 200 \
    --kmeans_percent 0.1 \
    --vocoder_data vocoder \
    --vocoder_config conf/vocoder/hifigan_unit_200.yaml \
    --nbpe 10000 \
    --lm_configs "conf/lm/paper/opt350m_sofa_lora.yaml conf/lm/paper/opt350m_vanilla_lora.yaml" \
    --pretrained_lm "${pretrained_lm}" \
    --ngpu 1 \
    --ptq_config conf/ptq/paper.yaml \
    "${decode_opts[@]}" \
    "$@"
