"""Every conf/lm config builds its LoRA targets for each model type it may be given; the
paper's grid (conf/lm/paper) is complete, loads in ESPnet and holds the paper's hyperparameters."""

import itertools
from pathlib import Path

import pytest
import torch
import yaml
from transformers import LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM, Qwen2Config, Qwen2ForCausalLM

from sofa_speechlm.lm.backbone import SUPPORTED_MODEL_TYPES
from sofa_speechlm.lm.causal_lm import SofaCausalLM
from sofa_speechlm.lm.finetune import DEFAULT_LORA_TARGETS
from sofa_speechlm.tasks.lm import SofaLMTask

CONF_DIR = Path(__file__).resolve().parents[1] / "conf/lm"
CONFIGS = sorted(str(p.relative_to(CONF_DIR)) for p in CONF_DIR.rglob("*.yaml"))
VOCAB = 40
TINY = {
    "opt": lambda: OPTForCausalLM(OPTConfig(
        hidden_size=32, word_embed_proj_dim=32, num_hidden_layers=1, num_attention_heads=4, ffn_dim=64, vocab_size=100)),
    "qwen2": lambda: Qwen2ForCausalLM(Qwen2Config(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=100)),
    "llama": lambda: LlamaForCausalLM(LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4, num_key_value_heads=2,
        vocab_size=100, tie_word_embeddings=True)),
}
# The paper's grid: model (file name prefix) -> hub id, model type; attentions; fine-tuning modes.
PAPER_MODELS = {"opt350m": ("facebook/opt-350m", "opt"), "opt1.3b": ("facebook/opt-1.3b", "opt"),
                "qwen2.5_0.5b": ("Qwen/Qwen2.5-0.5B", "qwen2")}
PAPER_ATTENTIONS = {"sofa": "sofa", "vanilla": "softmax"}
PAPER_FINETUNES = ("full", "lora", "qlora")
PAPER_TYPES = dict(PAPER_MODELS.values())
# Appendix D.1, the same for every model: Adam, lr 3e-4, weight decay 1e-6, warmup 2,500,
# batch bins 5,000, 50 epochs; LoRA rank 256, alpha 256, dropout 0.05.
PAPER_TRAINING = dict(optim="adam", optim_conf=dict(lr=3.0e-4, weight_decay=1.0e-6), scheduler="warmuplr",
                      scheduler_conf=dict(warmup_steps=2500), batch_type="length", batch_bins=5000, max_epoch=50)
PAPER_LORA = dict(rank=256, alpha=256, dropout=0.05)
PAPER_CONFIGS = [f"paper/{m}_{a}_{f}.yaml" for m, a, f in itertools.product(PAPER_MODELS, PAPER_ATTENTIONS, PAPER_FINETUNES)]


@pytest.fixture(scope="module")
def tiny_dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_lms")
    torch.manual_seed(0)
    for model_type, build in TINY.items():
        build().save_pretrained(root / model_type)
    return root


def lm_conf(name: str) -> dict:
    return yaml.safe_load((CONF_DIR / name).read_text(encoding="utf-8"))["lm_conf"]


def model_types(conf: dict) -> list:
    """The model type an inline config fixes, else every supported one: `--pretrained_lm` may
    give any pretrained model to a config (an OPT paper config a Qwen2 or Llama dir)."""
    if conf.get("hf_config"):
        return [conf["hf_config"]["model_type"]]
    return sorted(TINY)


CASES = [(name, t) for name in CONFIGS for t in model_types(lm_conf(name))]


def test_every_config_is_covered():
    assert {"paper/opt350m_sofa_lora.yaml", "smollm2_sofa_lora.yaml"} <= set(CONFIGS)
    assert set(TINY) == set(SUPPORTED_MODEL_TYPES) == set(DEFAULT_LORA_TARGETS)


def test_the_paper_grid_is_complete():
    assert sorted(name for name in CONFIGS if name.startswith("paper/")) == sorted(PAPER_CONFIGS)
    assert set(PAPER_TYPES.values()) <= set(SUPPORTED_MODEL_TYPES)


@pytest.mark.parametrize("name", PAPER_CONFIGS, ids=[n[6:-5] for n in PAPER_CONFIGS])
def test_paper_config_loads_with_the_paper_hyperparameters(name):
    args = SofaLMTask.get_parser().parse_args(["--config", str(CONF_DIR / name)])
    model, attention, finetune = Path(name).stem.rsplit("_", 2)
    assert args.lm == "sofa_opt" and args.model == "sofa_lm"
    assert args.lm_conf["pretrained"] == PAPER_MODELS[model][0]
    assert (args.lm_conf["attention"], args.lm_conf["finetune"]) == (PAPER_ATTENTIONS[attention], finetune)
    assert {key: getattr(args, key) for key in PAPER_TRAINING} == PAPER_TRAINING
    assert args.lm_conf.get("lora_conf") == (PAPER_LORA if finetune != "full" else None)


@pytest.mark.parametrize("name, model_type", CASES, ids=[f"{n[:-5]}-{t}" for n, t in CASES])
def test_config_builds_its_lora_targets(name, model_type, tiny_dirs):
    conf = {k: v for k, v in lm_conf(name).items() if k not in ("hf_config", "init_seed")}
    conf["pretrained"] = str(tiny_dirs / model_type)
    if conf["finetune"] != "full":
        conf["lora_conf"] = {**conf["lora_conf"], "rank": 4}  # the tiny model is 32 wide
    lm = SofaCausalLM(VOCAB, **conf)
    adapted = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in lm.named_parameters() if ".lora_A" in n}
    assert adapted == (set(DEFAULT_LORA_TARGETS[model_type]) if conf["finetune"] != "full" else set())


def test_targets_named_for_another_model_type_are_refused(tiny_dirs):
    opt_targets = DEFAULT_LORA_TARGETS["opt"]
    with pytest.raises(ValueError, match=r"target_modules: \['out_proj', 'fc1', 'fc2'\] name no linear layer of this qwen2 model; available: \['down_proj', 'gate_proj', 'k_proj', 'o_proj'"):
        SofaCausalLM(VOCAB, pretrained=str(tiny_dirs / "qwen2"), attention="softmax", finetune="lora",
                     lora_conf=dict(rank=4, alpha=8, dropout=0.0, target_modules=opt_targets))
