# Where the corpora live on this machine (nothing is downloaded). Each variable, as in
# ESPnet's db.sh, is the directory that HOLDS the corpus' own top folder; set it here or
# in the environment (the environment wins). A recipe only needs the corpora it uses.
export LIBRISPEECH=${LIBRISPEECH:-}          # holds LibriSpeech/{train-clean-100,...,test-other}/
export LIBRISPEECH_LM_TEXT=${LIBRISPEECH_LM_TEXT:-${LIBRISPEECH:+${LIBRISPEECH}/LibriSpeech}}  # librispeech-lm-norm.txt[.gz], or the directory holding it
export LIBRILIGHT=${LIBRILIGHT:-}            # holds Libri-Light's unlabelled small/ medium/ large/ (or librilight/ holding them)
export MLS=${MLS:-}                          # holds mls_english/ (or mls_english_opus/) with train/ dev/ test/
export LIBRITTS=${LIBRITTS:-}                # holds LibriTTS/ (or LibriTTS_R/) with train-clean-100/ ...
export VCTK=${VCTK:-}                        # holds VCTK-Corpus-0.92/ (or VCTK-Corpus/) with txt/ and wav48_silence_trimmed/ (or wav48/)
export LJSPEECH=${LJSPEECH:-}                # holds LJSpeech-1.1/ with metadata.csv and wavs/
