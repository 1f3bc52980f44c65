"""Every conf/lm config builds its LoRA targets for each model type it may be given."""

from pathlib import Path

import pytest
import torch
import yaml
from transformers import LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM, Qwen2Config, Qwen2ForCausalLM

from sofa_speechlm.lm.backbone import SUPPORTED_MODEL_TYPES
from sofa_speechlm.lm.causal_lm import SofaCausalLM
from sofa_speechlm.lm.finetune import DEFAULT_LORA_TARGETS

CONF_DIR = Path(__file__).resolve().parents[1] / "conf/lm"
CONFIGS = sorted(p.name for p in CONF_DIR.glob("*.yaml"))
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
# Offline model names and the model type they stand for (the tiny model stands in for them).
OFFLINE_TYPES = {"smollm2": "llama"}


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
    """The model type a config fixes (inline config, offline model) or every supported one."""
    if conf.get("hf_config"):
        return [conf["hf_config"]["model_type"]]
    if conf["pretrained"] in OFFLINE_TYPES:
        return [OFFLINE_TYPES[conf["pretrained"]]]
    return sorted(TINY)


CASES = [(name, t) for name in CONFIGS for t in model_types(lm_conf(name))]


def test_every_config_is_covered():
    assert {"sofa_lora.yaml", "vanilla_qlora.yaml", "smollm2_sofa_lora.yaml"} <= set(CONFIGS)
    assert set(TINY) == set(SUPPORTED_MODEL_TYPES) == set(DEFAULT_LORA_TARGETS)


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
