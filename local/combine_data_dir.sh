#!/usr/bin/env bash
# Combine Kaldi data dirs; see `python -m sofa_speechlm.bin.data_dir combine --help`.
exec python -m sofa_speechlm.bin.data_dir combine "$@"
