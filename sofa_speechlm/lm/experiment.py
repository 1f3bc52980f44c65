"""A trained stage-4 experiment as stages 5 and 6 use it: the full-weight model files and the
HuggingFace causal LM inside, with its token list and sentencepiece model.

Adapter experiments (lora/qlora) are used through their merged export (`<exp>/merged`), which
stage 4 writes; full fine-tuning experiments through ESPnet's averaged `valid.loss.ave.pth`.
`find_as_trained` gives an adapter experiment as it trained instead: for qlora the int8 base
(quantized on the device it is loaded to) with the unmerged adapters.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import torch
import yaml

MERGED_DIR = "merged"
AVERAGED_MODEL = "valid.loss.ave.pth"


def _averaged_files(exp_dir: Path) -> tuple[Path, Path]:
    """config.yaml and ESPnet's averaged checkpoint of a finished stage-4 experiment."""
    config, model = exp_dir / "config.yaml", exp_dir / AVERAGED_MODEL
    for path in (config, model):
        if not path.is_file():
            raise FileNotFoundError(f"{exp_dir}: {path.name} is missing: is it a finished stage-4 LM experiment?")
    return config, model


def _finetune(config: Path) -> str:
    """lm_conf.finetune of an ESPnet config.yaml (full, lora or qlora)."""
    with open(config, encoding="utf-8") as f:
        return ((yaml.safe_load(f) or {}).get("lm_conf") or {}).get("finetune", "full")


@dataclass
class LMExperiment:
    """The files of one stage-4 experiment: full weights, or (as_trained) its adapters unmerged."""

    exp_dir: Path
    train_config: Path
    model_file: Path
    as_trained: bool = False

    @classmethod
    def find(cls, exp_dir: str | Path) -> "LMExperiment":
        """The merged export when there is one, else the averaged full-weight checkpoint."""
        exp_dir = Path(exp_dir)
        merged = exp_dir / MERGED_DIR
        if (merged / "config.yaml").is_file() and (merged / "model.pth").is_file():
            return cls(exp_dir, merged / "config.yaml", merged / "model.pth")
        return cls(exp_dir, *_averaged_files(exp_dir))

    @classmethod
    def find_as_trained(cls, exp_dir: str | Path) -> "LMExperiment":
        """The averaged checkpoint of a lora/qlora experiment, loaded with its adapters unmerged."""
        exp_dir = Path(exp_dir)
        config, model = _averaged_files(exp_dir)
        if _finetune(config) == "full":
            raise ValueError(f"{config}: finetune 'full' has no adapters: its model as trained is the fp model")
        return cls(exp_dir, config, model, as_trained=True)

    @property
    def finetune(self) -> str:
        """How the experiment trained: its own config.yaml's, since the merged export's says full."""
        trained = self.exp_dir / "config.yaml"
        return _finetune(trained if trained.is_file() else self.train_config)

    def load(self, device: str = "cpu") -> tuple[torch.nn.Module, argparse.Namespace]:
        """(HuggingFace causal LM with its attention switched, ESPnet training args)."""
        from sofa_speechlm.tasks.lm import SofaLMTask

        model, train_args = SofaLMTask.build_model_from_file(self.train_config, self.model_file, device)
        lm = model.lm
        if self.as_trained:
            return lm.model.get_base_model().eval(), train_args  # the HF model with LoRA layers in place
        if getattr(lm, "finetune", "full") != "full":
            raise ValueError(
                f"{self.train_config}: finetune '{lm.finetune}' holds adapters; use the merged export "
                f"({self.exp_dir / MERGED_DIR}, written by stage 4 / bin.lm_export)"
            )
        return lm.model.eval(), train_args
