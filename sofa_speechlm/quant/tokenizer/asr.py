"""The downstream dev metric (quantize_tokenizer --exp_dir): the ASR WER of a stage-4 LM reading
a tokenizer's dev units, as the paper's Algorithms 1 and 2 measure WER.

Each dev utterance's units become stage 3's ASR line (``format_task('asr', text, units)``), the
prompt up to ``<generatetext>`` is decoded greedily by stage 6's batched decoder
(``eval.decoding.BatchDecoder``), and the hypotheses are scored by stage 6's WER
(``eval.text.wer``, Whisper-normalized) against the dev text: the same numbers ``bin.evaluate``
gives for that LM text. The callable returns the degradation in WER points against the WER on
the full-precision units (so ``--gamma`` stays the paper's 0.25 WER points)."""
from __future__ import annotations

import logging
from pathlib import Path

import yaml

from sofa_speechlm.data import DataDir
from sofa_speechlm.data.kaldi import sort_key
from sofa_speechlm.lm.generate import split_prompt
from sofa_speechlm.text.templates import format_task

from .evaluation import UnitErrorRate


def dev_texts(data_dirs: list[str], keys: list[str]) -> dict[str, str]:
    """key -> text of the dev utterances ``keys`` (sample_waveforms' keys: the utt id, or
    ``<data_dir>/<utt id>`` with several data dirs); the data dirs need a ``text``."""
    texts = {}
    for data_dir in data_dirs:
        table = DataDir(data_dir).require("text")
        prefix = f"{data_dir}/" if len(data_dirs) > 1 else ""
        texts.update({prefix + utt_id: text for utt_id, text in table.items()})
    missing = [key for key in keys if key not in texts]
    if missing:
        raise ValueError(f"--dev_data_dir {' '.join(data_dirs)}: no text for {len(missing)} dev utterances (first: {missing[0]}); "
                         "--exp_dir scores the ASR WER against it")
    return {key: texts[key] for key in keys}


class AsrWordErrorRate:
    """Callable like UnitErrorRate: WER points the LM's dev ASR WER loses on the units of the
    reader's model as it is now (or of another reader given to the call) against full precision."""

    name = "asr_wer"

    def __init__(self, uer: UnitErrorRate, keys: list[str], texts: dict[str, str], exp_dir: str | Path,
                 max_utts: int = 20, max_new_tokens: int = 100, batch_size: int = 16, device: str = "cpu"):
        from sofa_speechlm.eval.decoding import BatchDecoder
        from sofa_speechlm.lm.experiment import LMExperiment
        from sofa_speechlm.text.tokenizer import JointTokenizer

        if max_utts < 1:
            raise ValueError(f"--asr_max_utts {max_utts}: expected at least 1")
        if max_new_tokens < 1:
            raise ValueError(f"--asr_max_new_tokens {max_new_tokens}: expected at least 1")
        experiment = LMExperiment.find(exp_dir)
        config = yaml.safe_load(experiment.train_config.read_text(encoding="utf-8"))
        token_list = config["token_list"]
        if isinstance(token_list, str):
            token_list = Path(token_list).read_text(encoding="utf-8").split("\n")[:-1]
        self.tokenizer = JointTokenizer(config["bpemodel"], token_list)
        model, _ = experiment.load(device)
        vocab = model.get_output_embeddings().weight.size(0)
        if vocab != len(token_list):
            raise ValueError(f"--exp_dir {exp_dir}: the model has {vocab} output tokens but its token list {len(token_list)}")
        self.decoder = BatchDecoder(model.eval(), len(token_list) - 1, batch_size)
        self.uer, self.max_new_tokens, self.exp_dir = uer, max_new_tokens, str(exp_dir)
        # the first max_utts dev utterances by id whose full-precision prompt fits the LM's positions
        limit = (self.decoder.max_positions or 10**9) - 1 - max_new_tokens
        order = sorted(range(len(keys)), key=lambda index: sort_key(keys[index]))
        self.indices, self.references, too_long = [], [], 0
        for index in order:
            if len(self.indices) == max_utts:
                break
            prompt, reference = split_prompt(format_task("asr", texts[keys[index]], uer.reference[index].tolist()))
            if len(self._ids(prompt)) > limit:
                too_long += 1
                continue
            self.indices.append(index)
            self.references.append(reference)
        if too_long:
            logging.warning("--exp_dir: %d dev utterances left out of the ASR WER: their prompt and --asr_max_new_tokens %d "
                            "exceed the LM's %s positions", too_long, max_new_tokens, self.decoder.max_positions)
        if not self.indices:
            raise ValueError(f"--exp_dir {exp_dir}: no dev utterance fits the LM's {self.decoder.max_positions} positions "
                             f"with --asr_max_new_tokens {max_new_tokens}")
        self.utterances = len(self.indices)
        self.fp_wer = self.wer_of([uer.reference[index] for index in self.indices])
        logging.info("--exp_dir %s: dev ASR WER %.2f%% on %d utterances of the full-precision units", exp_dir, self.fp_wer, self.utterances)

    def _ids(self, prompt: str) -> list[int]:
        return self.tokenizer.pieces_to_ids(self.tokenizer.tokenize(prompt))

    def hypotheses(self, units) -> list[str]:
        """Greedy transcripts of the scored dev utterances from their ``units`` (one array each)."""
        from sofa_speechlm.eval.prompts import hypothesis_text

        prompts = [self._ids(split_prompt(format_task("asr", "x", sequence.tolist()))[0]) for sequence in units]
        return [hypothesis_text(self.tokenizer, h.tokens) for h in self.decoder.decode(prompts, 1, self.max_new_tokens)]

    def wer_of(self, units) -> float:
        from sofa_speechlm.eval.text import wer

        return wer(self.references, self.hypotheses(units))

    def wer(self, reader=None) -> float:
        """The dev ASR WER (%) on the units of ``reader`` (default: the model as it is now)."""
        reader = reader or self.uer.reader
        return self.wer_of([self.uer.kmeans(reader.extract(self.uer.waveforms[index])) for index in self.indices])

    def __call__(self, reader=None) -> float:
        return self.wer(reader) - self.fp_wer
