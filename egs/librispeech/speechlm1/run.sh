#!/usr/bin/env bash
# LibriSpeech SpeechLM recipe with the paper's settings: HuBERT-base layer-6 units (k=200),
# a joint BPE, and SOFA vs vanilla OPT-350m LMs with LoRA (rank 256). Set the corpus paths
# in db.sh and the local checkpoints below; any option of speechlm.sh can be appended.
set -euo pipefail

hubert_ckpt=${HUBERT_CKPT:-}            # e.g. hubert_base_ls960.pt (fairseq) or a HF HuBERT dir
pretrained_lm=${PRETRAINED_LM:-}        # e.g. a local copy of facebook/opt-350m

./speechlm.sh \
    --data_script local/data.sh \
    --hubert_ckpt "${hubert_ckpt}" \
    --layer 6 \
    --nclusters 200 \
    --vocoder_config conf/vocoder/hifigan_unit_200.yaml \
    --nbpe 10000 \
    --lm_configs "conf/lm/paper/opt350m_sofa_lora.yaml conf/lm/paper/opt350m_vanilla_lora.yaml" \
    --pretrained_lm "${pretrained_lm}" \
    "$@"
