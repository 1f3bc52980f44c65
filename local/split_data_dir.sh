#!/usr/bin/env bash
# Split Kaldi data dirs; see `python -m sofa_speechlm.bin.data_dir split --help`.
exec python -m sofa_speechlm.bin.data_dir split "$@"
