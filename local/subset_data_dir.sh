#!/usr/bin/env bash
# Subset Kaldi data dirs; see `python -m sofa_speechlm.bin.data_dir subset --help`.
exec python -m sofa_speechlm.bin.data_dir subset "$@"
