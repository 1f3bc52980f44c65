#!/usr/bin/env bash
# Validate Kaldi data dirs; see `python -m sofa_speechlm.bin.data_dir validate --help`.
exec python -m sofa_speechlm.bin.data_dir validate "$@"
