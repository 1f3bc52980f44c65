"""Tiny models and a tiny stage-4 experiment for the PTQ tests (no downloads, seconds to build)."""
import random
from pathlib import Path

import torch
from transformers import OPTConfig, OPTForCausalLM, Qwen2Config, Qwen2ForCausalLM

from sofa_speechlm.attention import apply_attention
from sofa_speechlm.text.templates import TASKS
from sofa_speechlm.text.unit_chars import units_to_chars

REPO = Path(__file__).resolve().parents[1]
VOCAB = 64
WORDS = "the a cat dog sat ran on mat big small red blue house tree".split()


def tiny_opt(pre_ln: bool = True, hidden: int = 64, ffn: int = 128, seed: int = 0):
    torch.manual_seed(seed)
    config = OPTConfig(vocab_size=VOCAB, hidden_size=hidden, num_hidden_layers=2, ffn_dim=ffn, num_attention_heads=4,
                       max_position_embeddings=128, word_embed_proj_dim=hidden, dropout=0.0,
                       do_layer_norm_before=pre_ln)
    return _randomize_norms(OPTForCausalLM(config).eval())


def tiny_qwen2(seed: int = 0):
    torch.manual_seed(seed)
    config = Qwen2Config(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, intermediate_size=128,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return _randomize_norms(Qwen2ForCausalLM(config).eval())


def _randomize_norms(model):
    """Norm weights/biases away from 1/0 (a trained model's are), so folds are really tested."""
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(0.3 * torch.randn(p.shape, generator=generator))
    return model


FAMILIES = {"opt_pre_ln": tiny_opt, "opt_post_ln": lambda: tiny_opt(pre_ln=False), "qwen2": tiny_qwen2}


def build(family: str, attention: str):
    model = FAMILIES[family]()
    if attention != "sdpa":
        apply_attention(model, attention)
    return model


def token_batches(count: int = 2, batch: int = 2, length: int = 16, seed: int = 1):
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(1, VOCAB, (batch, length), generator=generator) for _ in range(count)]


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def task_line(rng: random.Random, task: str) -> str:
    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 7)))
    units = units_to_chars(rng.randint(0, 15) for _ in range(rng.randint(5, 15)))
    return {"textlm": f"<generatetext> {text}", "speechlm": f"<generatespeech> {units}",
            "asr": f"<startofspeech> {units} <generatetext> {text}",
            "tts": f"<startoftext> {text} <generatespeech> {units}"}[task]


def write_lm_text(directory: Path, count: int, seed: int) -> Path:
    """<directory>/{textlm,speechlm,asr,tts,all}.txt like stage 3 writes them."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    everything = []
    for task in TASKS:
        lines = [f"{task}_utt{i:04d} {task_line(rng, task)}" for i in range(count)]
        (directory / f"{task}.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
        everything += lines
    (directory / "all.txt").write_text("\n".join(everything) + "\n", encoding="utf-8")
    return directory


def train_experiment(root: Path, lm_config: str) -> Path:
    """A stage-4 experiment dir (one short ESPnet epoch of ``lm_config``) under ``root``."""
    from sofa_speechlm.bin import lm_train
    from sofa_speechlm.text.bpe import train_sentencepiece, write_token_list

    text = root / "lm_text"
    if not (text / "train" / "all.txt").is_file():
        write_lm_text(text / "train", 60, seed=0)
        write_lm_text(text / "dev", 10, seed=1)
        bpemodel = train_sentencepiece(text / "train" / "all.txt", root / "bpe", nbpe=60)
        write_token_list(bpemodel, root / "tokens.txt")
    bpemodel = next((root / "bpe").glob("*.model"))
    common = ["--token_list", str(root / "tokens.txt"), "--bpemodel", str(bpemodel), "--token_type", "bpe",
              "--train_data_path_and_name_and_type", f"{text / 'train/all.txt'},text,text",
              "--valid_data_path_and_name_and_type", f"{text / 'dev/all.txt'},text,text", "--ngpu", "0",
              "--num_workers", "0"]
    if not (root / "stats").is_dir():
        lm_train.main(common + ["--collect_stats", "true", "--output_dir", str(root / "stats"),
                                "--batch_type", "unsorted", "--batch_size", "50"])
    exp = root / f"lm_{Path(lm_config).stem}"
    lm_train.main(common + [
        "--config", str(REPO / lm_config), "--output_dir", str(exp),
        "--train_shape_file", str(root / "stats/train/text_shape"),
        "--valid_shape_file", str(root / "stats/valid/text_shape"), "--fold_length", "150",
        "--max_epoch", "1", "--batch_bins", "2000", "--scheduler_conf", "warmup_steps=5", "--use_tensorboard", "false",
        "--use_matplotlib", "false"])
    return exp
