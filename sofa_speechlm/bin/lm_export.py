"""Merge the LoRA adapters of a lora/qlora SpeechLM into a plain full-weight experiment.

The adapters are merged into the full-precision base (for qlora too: its int8 base only
served training), giving <output_dir>/config.yaml (finetune: full) and <output_dir>/model.pth
that rebuild like any full fine-tuning experiment (and feed post-training quantization).

    python -m sofa_speechlm.bin.lm_export --train_config exp/lm_x/config.yaml \\
        --model_file exp/lm_x/valid.loss.ave.pth --output_dir exp/lm_x/merged
"""

import argparse
import copy
import logging
from pathlib import Path

import torch
import yaml

from sofa_speechlm.tasks.lm import SofaLMTask
from sofa_speechlm.bin import add_log_level, setup_logging


def _build(config: dict, finetune: str):
    config = copy.deepcopy(config)
    config["lm_conf"]["finetune"] = finetune
    config["lm_conf"].pop("qlora_threshold", None)  # the merge uses the full-precision base
    if finetune == "full":
        config["lm_conf"].pop("lora_conf", None)
    return config, SofaLMTask.build_model(argparse.Namespace(**config))


def export_merged(train_config: Path, model_file: Path, output_dir: Path) -> Path:
    """Write the merged experiment into `output_dir`; returns its model.pth."""
    with open(train_config, encoding="utf-8") as f:
        config = yaml.safe_load(f)
    finetune = config.get("lm_conf", {}).get("finetune", "full")
    if config.get("lm") != "sofa_opt" or finetune == "full":
        raise ValueError(
            f"{train_config}: expected an 'lm: sofa_opt' experiment with finetune lora or qlora "
            f"(got lm={config.get('lm')}, finetune={finetune}); there are no adapters to merge"
        )
    _, adapted = _build(config, "lora")
    adapted.load_state_dict(torch.load(model_file, map_location="cpu"), strict=True)
    merged = adapted.lm.model.merge_and_unload()
    full_config, full = _build(config, "full")
    full.lm.model.load_state_dict(merged.state_dict(), strict=True)

    output_dir.mkdir(parents=True, exist_ok=True)
    with open(output_dir / "config.yaml", "w", encoding="utf-8") as f:
        yaml.safe_dump(full_config, f, allow_unicode=True, sort_keys=False)
    torch.save(full.state_dict(), output_dir / "model.pth")
    logging.info(f"Merged {finetune} adapters of {model_file} into {output_dir}/model.pth")
    return output_dir / "model.pth"


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train_config", type=Path, required=True, help="config.yaml of the lora/qlora experiment")
    parser.add_argument("--model_file", type=Path, required=True, help="its .pth (adapter and vocabulary weights)")
    parser.add_argument("--output_dir", type=Path, required=True, help="where config.yaml and model.pth go")
    add_log_level(parser)
    return parser


def main(cmd=None) -> None:
    args = get_parser().parse_args(cmd)
    setup_logging(args.log_level)
    export_merged(args.train_config, args.model_file, args.output_dir)


if __name__ == "__main__":
    main()
