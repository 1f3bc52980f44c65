#!/usr/bin/env bash
# Fix Kaldi data dirs; see `python -m sofa_speechlm.bin.data_dir fix --help`.
exec python -m sofa_speechlm.bin.data_dir fix "$@"
