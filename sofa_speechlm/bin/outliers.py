"""Outlier statistics and last-layer attention maps of one stage-4 LM (or a stage-5 variant of it).

    python -m sofa_speechlm.bin.outliers --exp_dir exp/lm_tiny_sofa_full \\
        --output_dir exp/lm_tiny_sofa_full/eval/fp [--ptq_dir exp/lm_tiny_sofa_full/ptq/rtn_w4a16]

Reads the first --num_sequences lines of each test LM text file (textlm, speechlm, asr, tts under
--lm_text_dir), tokenizes them as training does (<sos/eos> + sentencepiece ids) and writes
<output_dir>/outliers.json (per module, per layer and overall: infinity norm and kurtosis per
modality; see sofa_speechlm.eval.outliers) and <output_dir>/attention_maps.npz (one utterance per
task, the last layer's head-averaged attention probabilities), which bin.report plots.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from sofa_speechlm.bin import add_log_level, setup_logging
from sofa_speechlm.eval.outliers import MODALITY_SOURCES, collect_outliers, position_mask
from sofa_speechlm.text.bpe import SOS_EOS
from sofa_speechlm.text.templates import SPECIAL_TOKENS

OUTLIERS_JSON = "outliers.json"
ATTENTION_NPZ = "attention_maps.npz"
ATTENTION_TASKS = ("textlm", "speechlm", "asr", "tts")
DONE_MARKER = ".done"


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp_dir", required=True, help="stage-4 LM experiment dir (exp/lm_<name>)")
    parser.add_argument("--ptq_dir", default=None, help="a stage-5 variant dir of that LM (exp/lm_<name>/ptq/<variant>); default: the full-precision LM")
    parser.add_argument("--output_dir", required=True, help="where outliers.json and attention_maps.npz go")
    parser.add_argument("--lm_text_dir", default="dump/lm_text/test", help="stage-3 LM text of the test set ({textlm,speechlm,asr,tts}.txt)")
    parser.add_argument("--num_sequences", type=int, default=32, help="sequences per modality (speech+text: split between asr and tts)")
    parser.add_argument("--max_length", type=int, default=256, help="longer sequences are cut to this many tokens")
    parser.add_argument("--attention_max_tokens", type=int, default=64, help="attention maps: an utterance this short, else this many positions around the task marker")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    add_log_level(parser)
    return parser


def read_lm_text(path: Path, limit: int | None = None) -> list[tuple[str, str]]:
    """(uttid, line) of an LM text file, the first `limit` of them."""
    entries = []
    with open(path, encoding="utf-8") as file:
        for number, raw in enumerate(file, 1):
            parts = raw.rstrip("\n").split(maxsplit=1)
            if len(parts) != 2:
                raise ValueError(f"{path}:{number}: expected 'uttid text', got {raw.strip()[:60]!r}")
            entries.append((parts[0], parts[1]))
            if limit is not None and len(entries) == limit:
                break
    return entries


def recipe_path(path: str, exp_dir: Path) -> Path:
    """A path of config.yaml, which ESPnet writes relative to the recipe dir (<recipe>/exp/lm_x):
    as given when it exists from here, else from that recipe dir."""
    path = Path(path)
    if path.is_absolute() or path.exists():
        return path
    from_recipe = exp_dir.resolve().parent.parent / path
    return from_recipe if from_recipe.exists() else path


class Encoder:
    """LM text line -> (pieces, ids) exactly as training feeds it: <sos/eos> + sentencepiece ids."""

    def __init__(self, train_args, exp_dir: Path):
        from sofa_speechlm.text.tokenizer import JointTokenizer

        self.tokenizer = JointTokenizer(recipe_path(train_args.bpemodel, exp_dir), list(train_args.token_list))

    def __call__(self, line: str, max_length: int) -> tuple[list[str], list[int]]:
        pieces = [SOS_EOS] + self.tokenizer.tokenize(line)
        pieces = pieces[:max_length]
        return pieces, self.tokenizer.pieces_to_ids(pieces)


def modality_batches(encoder, lm_text_dir: Path, num_sequences: int, max_length: int, batch_size: int):
    """(batches for collect_outliers, sources {modality: {"files", "sequences"}})."""
    batches, sources = [], {}
    for modality, (tasks, positions) in MODALITY_SOURCES.items():
        per_file = max(1, num_sequences // len(tasks))
        files = [lm_text_dir / f"{task}.txt" for task in tasks]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            logging.warning(f"modality {modality}: {', '.join(missing)} not found (stage 3 writes it); skipped")
            continue
        encoded = []
        for path in files:
            for _, line in read_lm_text(path, per_file):
                pieces, ids = encoder(line, max_length)
                encoded.append((ids, position_mask(pieces, positions)))
        encoded = [(ids, mask) for ids, mask in encoded if any(mask)]
        sources[modality] = {"files": [str(f) for f in files], "sequences": len(encoded)}
        for start in range(0, len(encoded), batch_size):
            chunk = encoded[start : start + batch_size]
            batches.append((modality, [ids for ids, _ in chunk], [mask for _, mask in chunk]))
    if not batches:
        raise FileNotFoundError(f"{lm_text_dir}: no test LM text (textlm/speechlm/asr/tts .txt) to compute outliers on")
    return batches, sources


def pick_utterance(encoder, path: Path, max_tokens: int, max_length: int) -> tuple[str, list[str], list[int]]:
    """The first utterance of `path` that fits in max_tokens, else the shortest one (cut to max_length)."""
    entries = read_lm_text(path)
    if not entries:
        raise ValueError(f"{path}: empty LM text file")
    shortest = None
    for utt_id, line in entries:
        pieces, ids = encoder(line, max_length)
        if len(ids) <= max_tokens:
            return utt_id, pieces, ids
        if shortest is None or len(ids) < len(shortest[2]):
            shortest = (utt_id, pieces, ids)
    return shortest


def attention_window(pieces: list[str], max_tokens: int) -> tuple[int, int]:
    """[start, end) of the positions to draw: all of a short sequence, else max_tokens around the
    last task marker (<generatetext>/<generatespeech>), where the two modalities meet."""
    if len(pieces) <= max_tokens:
        return 0, len(pieces)
    markers = [i for i, piece in enumerate(pieces) if i > 1 and piece in SPECIAL_TOKENS]
    centre = markers[-1] if markers else 0
    start = min(max(0, centre - max_tokens // 2), len(pieces) - max_tokens)
    return start, start + max_tokens


def load_model(exp_dir: Path, ptq_dir: Path | None, device: str):
    """(model, train_args, variant name, execution) of the LM or of its stage-5 variant."""
    from sofa_speechlm.lm.experiment import LMExperiment

    experiment = LMExperiment.find(exp_dir)
    model, train_args = experiment.load(device)
    train_args.finetune = experiment.finetune  # as trained: a merged LoRA export's lm_conf says full
    if ptq_dir is None:
        return model, train_args, "fp", "fp"
    if not (ptq_dir / DONE_MARKER).is_file():
        raise FileNotFoundError(f"{ptq_dir}: no {DONE_MARKER} marker: the stage-5 variant is missing or unfinished")
    from sofa_speechlm.quant import load_quantized, read_quant_config  # stage 5

    del model
    quantized = load_quantized(str(ptq_dir), device=device)
    execution = read_quant_config(str(ptq_dir)).get("execution", "simulated")
    return quantized.eval(), train_args, ptq_dir.name, execution


def main(cmd=None):
    args = get_parser().parse_args(cmd)
    setup_logging(args.log_level)
    from sofa_speechlm.eval.attention_maps import attention_normalizer, last_layer_attention

    exp_dir, output_dir = Path(args.exp_dir), Path(args.output_dir)
    ptq_dir = Path(args.ptq_dir) if args.ptq_dir else None
    lm_text_dir = Path(args.lm_text_dir)
    model, train_args, variant, execution = load_model(exp_dir, ptq_dir, args.device)
    encoder = Encoder(train_args, exp_dir)
    batches, sources = modality_batches(encoder, lm_text_dir, args.num_sequences, args.max_length, args.batch_size)
    logging.info(f"{exp_dir} ({variant}): outlier statistics over {sum(s['sequences'] for s in sources.values())} sequences")
    with tqdm(total=sum(len(b[1]) for b in batches), desc="outliers", unit="seq") as progress:
        stats = collect_outliers(model, batches, device=args.device, progress=progress)

    maps, meta = {}, {}
    for task in ATTENTION_TASKS:
        path = lm_text_dir / f"{task}.txt"
        if not path.is_file():
            logging.warning(f"{path} not found: no attention map for {task}")
            continue
        utt_id, pieces, ids = pick_utterance(encoder, path, args.attention_max_tokens, args.max_length)
        weights = last_layer_attention(model, ids, args.device)
        row_sums = weights.sum(axis=1)
        start, end = attention_window(pieces, args.attention_max_tokens)
        maps[task] = weights[start:end, start:end].astype(np.float32)
        meta[task] = {"utt_id": utt_id, "tokens": pieces[start:end], "window": [start, end], "length": len(pieces),
                      "row_sum_min": float(row_sums.min()), "row_sum_mean": float(row_sums.mean())}

    result = {
        "lm": exp_dir.name, "variant": variant, "execution": execution,
        "attention": attention_normalizer(model), "finetune": train_args.finetune,
        "model_type": model.config.model_type,
        "conventions": "per sequence over the modality's positions: inf norm and Pearson kurtosis (unbiased std) "
                       "of the flattened outputs; per module mean over sequences; layer max_inf_norm = max over its modules",
        "sources": sources, **stats,
        "attention_maps": {"file": ATTENTION_NPZ, "layer": stats["num_layers"] - 1, "heads": "mean", "tasks": meta},
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(output_dir / ATTENTION_NPZ, **maps)
    (output_dir / OUTLIERS_JSON).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    for modality, row in stats["summary"].items():
        logging.info(f"{modality}: max inf norm {row['max_inf_norm']:.2f} ({row['max_inf_norm_module']}), mean kurtosis {row['mean_kurtosis']:.2f}")
    logging.info(f"wrote {output_dir / OUTLIERS_JSON}")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
