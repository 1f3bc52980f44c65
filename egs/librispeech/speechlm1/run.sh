#!/usr/bin/env bash
# LibriSpeech SpeechLM recipe with the paper's settings: HuBERT-base layer-6 units (k=200),
# a joint BPE, and SOFA vs vanilla OPT LMs. Set the corpus paths in db.sh and the
# pretrained checkpoints below; every option of speechlm.sh can be overridden here.
set -euo pipefail

./speechlm.sh \
    --data_script local/data.sh \
    --hubert_ckpt "${HUBERT_CKPT:-}" \
    --layer 6 \
    --nclusters 200 \
    --nbpe 10000 \
    "$@"
