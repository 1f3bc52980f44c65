"""ESPnet's LM task with the SOFA SpeechLM registered next to ESPnet's built-in LMs.

`--lm sofa_opt` (SofaCausalLM: OPT, Qwen2 or Llama backbones) and `--model sofa_lm` (VoxtLM
multitask or whole-sequence loss) join ESPnet's choices; everything else (trainer, DDP,
AMP, resuming, batch_bins, averaging) is ESPnet's. Every entry point that rebuilds a model
from config.yaml must go through `SofaLMTask`, which importing this module provides.
"""

import argparse
import logging
from typing import List

from espnet2.lm.abs_model import AbsLM
from espnet2.tasks.lm import LMTask, lm_choices, model_choices
from espnet2.train.abs_espnet_model import AbsESPnetModel
from espnet2.train.class_choices import ClassChoices
from sofa_speechlm.lm.causal_lm import SofaCausalLM
from sofa_speechlm.lm.espnet_model import SofaSpeechLanguageModel

sofa_lm_choices = ClassChoices(
    "lm",
    classes=dict(lm_choices.classes, sofa_opt=SofaCausalLM),
    type_check=AbsLM,
    default=lm_choices.default,
)
sofa_model_choices = ClassChoices(
    "model",
    classes=dict(model_choices.classes, sofa_lm=SofaSpeechLanguageModel),
    type_check=AbsESPnetModel,
    default=model_choices.default,
)


def read_token_list(args: argparse.Namespace) -> List[str]:
    """The token list of `args` (a file path or, in a saved config.yaml, the list itself)."""
    if isinstance(args.token_list, str):
        with open(args.token_list, encoding="utf-8") as f:
            token_list = [line.rstrip("\n") for line in f]
        # As ESPnet does: config.yaml keeps the list itself, so the experiment is portable.
        args.token_list = list(token_list)
        return token_list
    if isinstance(args.token_list, (list, tuple)):
        return list(args.token_list)
    raise ValueError(f"--token_list: expected a file path or a list, got {type(args.token_list).__name__}")


class SofaLMTask(LMTask):
    class_choices_list = [sofa_lm_choices, sofa_model_choices]

    @classmethod
    def build_model(cls, args: argparse.Namespace) -> AbsESPnetModel:
        if args.lm != "sofa_opt" and getattr(args, "model", "lm") != "sofa_lm":
            return super().build_model(args)
        if args.init is not None:
            raise ValueError(
                f"--init {args.init}: re-initialising would overwrite the pretrained weights "
                "of the SOFA SpeechLM; leave --init unset"
            )
        token_list = read_token_list(args)
        logging.info(f"Vocabulary size: {len(token_list)}")
        lm = sofa_lm_choices.get_class(args.lm)(vocab_size=len(token_list), **args.lm_conf)
        model_class = sofa_model_choices.get_class(args.model)
        extra = dict(token_list=token_list) if args.model in ("sofa_lm", "lm_multitask") else {}
        return model_class(lm=lm, vocab_size=len(token_list), **args.model_conf, **extra)
