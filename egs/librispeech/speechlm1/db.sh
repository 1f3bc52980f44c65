# Where the corpora live on this machine (nothing is downloaded).
LIBRISPEECH=${LIBRISPEECH:-/path/to/LibriSpeech}              # holds train-clean-100/, dev-clean/, test-clean/
LIBRISPEECH_LM_TEXT=${LIBRISPEECH_LM_TEXT:-}                   # librispeech-lm-norm.txt (optional)
