"""Speech and text corpora in their published layouts, prepared as Kaldi data dirs.

`CORPORA` is the registry (one entry per corpus); `prepare_corpus` writes a corpus'
subsets as data dirs, which a recipe's local/data.sh combines into its task dirs.
"""

from sofa_speechlm.data.corpora.base import CorpusNotFound, LayoutError, Recording, Report, normalize_text
from sofa_speechlm.data.corpora.prepare import PrepOptions, SubsetSummary, prepare_corpus, subset_source
from sofa_speechlm.data.corpora.registry import CORPORA, Corpus, get_corpus

__all__ = ["CORPORA", "Corpus", "CorpusNotFound", "LayoutError", "PrepOptions", "Recording", "Report", "SubsetSummary", "get_corpus", "normalize_text", "prepare_corpus", "subset_source"]
