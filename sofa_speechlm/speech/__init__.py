"""Speech units: HuBERT (fairseq or HuggingFace checkpoints) or MFCC features, k-means, units files.

Submodules are imported where used (`sofa_speechlm.speech.hubert`, `.kmeans`, ...) so that
reading a units file does not load torch models.
"""
