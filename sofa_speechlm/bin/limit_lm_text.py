"""Finds LM text lines longer than an LM's positions and drops, cuts or refuses them (stage 4).

Run before ESPnet's LM training, per LM config: tokenizes every line with the joint BPE model,
compares it with the config's `max_position_embeddings` (inline `hf_config` or the pretrained
model's config) minus the <sos/eos> ESPnet adds, lists every long line with its token count in
`<output_dir>/long_lines`, and writes `<output_dir>/text` and `<output_dir>/text_shape`
(the shape file without dropped lines, with cut lengths) for lm_train. Where no line is long
they are links to the inputs.

    python -m sofa_speechlm.bin.limit_lm_text --train_config conf/lm/tiny_sofa_full.yaml \\
        --lm_text dump/lm_text/train/all.txt --bpemodel dump/token_list/bpe_unigram1000/bpe.model \\
        --shape_file exp/lm_stats_bpe_unigram1000/train/text_shape --output_dir exp/lm_tiny_sofa_full/lm_text/train
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from sofa_speechlm.bin import add_log_level, setup_logging
from sofa_speechlm.data import DataDirError
from sofa_speechlm.text.length import DEFAULT_RULE, LONG_LINE_RULES, LongLinesError, limit_lm_text, max_line_tokens


def lm_max_positions(train_config: str | Path, pretrained_lm: str | None = None) -> int:
    """max_position_embeddings of the LM a stage-4 config (or its trained config.yaml) builds."""
    path = Path(train_config)
    if not path.is_file():
        raise ValueError(f"--train_config {path}: not found")
    lm_conf = (yaml.safe_load(path.read_text(encoding="utf-8")) or {}).get("lm_conf") or {}
    pretrained = pretrained_lm or lm_conf.get("pretrained")
    if not pretrained and (lm_conf.get("hf_config") or {}).get("max_position_embeddings"):
        return int(lm_conf["hf_config"]["max_position_embeddings"])  # without importing transformers (seconds)
    from transformers import AutoConfig

    from sofa_speechlm.lm.offline_models import resolve_pretrained

    try:
        if pretrained:
            config = AutoConfig.from_pretrained(resolve_pretrained(pretrained))
            source = f"pretrained LM {pretrained}"
        elif lm_conf.get("hf_config"):
            options = dict(lm_conf["hf_config"])
            config = AutoConfig.for_model(options.pop("model_type", None), **options)
            source = f"{path}: lm_conf.hf_config"
        else:
            raise ValueError(f"{path}: lm_conf has neither 'pretrained' nor 'hf_config'")
    except (OSError, KeyError) as error:
        raise ValueError(f"--train_config {path}: cannot read the LM's HuggingFace config ({error})") from None
    positions = getattr(config, "max_position_embeddings", None)
    if not positions:
        raise ValueError(f"{source}: no max_position_embeddings; give --max_length")
    return int(positions)


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lm_text", required=True, help="`uttid text` LM text (stage 3's <split>/all.txt)")
    parser.add_argument("--bpemodel", required=True, help="the joint sentencepiece model ESPnet tokenizes with")
    parser.add_argument("--output_dir", required=True, help="gets text, text_shape and long_lines")
    parser.add_argument("--train_config", help="LM config (conf/lm/*.yaml) whose max_position_embeddings limits the lines")
    parser.add_argument("--pretrained_lm", default=None, help="pretrained LM overriding the config's lm_conf.pretrained (run.sh --pretrained_lm)")
    parser.add_argument("--max_length", type=int, default=0, help="most BPE tokens per line; 0: the LM's max_position_embeddings - 1")
    parser.add_argument("--shape_file", default=None, help="ESPnet text_shape of --lm_text (stage 4's statistics), filtered alike")
    parser.add_argument("--long_lines", default=DEFAULT_RULE, choices=LONG_LINE_RULES, help="what happens to a line over the limit")
    add_log_level(parser)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = get_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        if args.max_length > 0:
            max_tokens = args.max_length
        elif args.train_config:
            max_tokens = max_line_tokens(lm_max_positions(args.train_config, args.pretrained_lm))
        else:
            raise ValueError("give --train_config (the LM's positions limit the lines) or --max_length")
        if not Path(args.bpemodel).is_file():
            raise ValueError(f"--bpemodel {args.bpemodel}: not found (stage 3 writes it)")
        limit_lm_text(args.lm_text, args.bpemodel, max_tokens, args.long_lines, args.output_dir, args.shape_file)
    except (DataDirError, LongLinesError, ValueError) as error:
        raise SystemExit(f"limit_lm_text: error: {error}") from None


if __name__ == "__main__":
    main()
