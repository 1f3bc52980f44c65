"""apply_attention on tiny random OPT, Qwen2 and Llama causal LMs built here (no downloads)."""
import pytest
import torch
from transformers import (
    AutoModelForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    OPTConfig,
    OPTForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from sofa_speechlm.attention import (
    ATTENTION_IMPLEMENTATION,
    apply_attention,
    hf_normalizers,
    restore_attention,
    supported_model_types,
)
from sofa_speechlm.lm.backbone import load_pretrained


def tiny_opt():
    torch.manual_seed(0)
    config = OPTConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, ffn_dim=64, num_attention_heads=4,
        max_position_embeddings=64, word_embed_proj_dim=32, dropout=0.0,
    )
    return OPTForCausalLM(config).eval()


def tiny_qwen2():
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, intermediate_size=64, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64,
    )
    return Qwen2ForCausalLM(config).eval()


def tiny_llama():
    """SmolLM2's layout in small: grouped KV heads (4 query / 2 KV), tied embeddings."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, intermediate_size=64, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config).eval()


MODELS = {"opt": tiny_opt, "qwen2": tiny_qwen2, "llama": tiny_llama}
IDS = torch.randint(0, 64, (2, 12), generator=torch.Generator().manual_seed(1))
PADDED = torch.ones(2, 12, dtype=torch.long)
PADDED[1, :3] = 0  # left padding


@pytest.fixture(params=list(MODELS))
def model(request):
    return MODELS[request.param]()


@torch.no_grad()
def test_softmax_reproduces_the_original_logits(model):
    original = model(IDS).logits
    original_padded = model(IDS, attention_mask=PADDED).logits
    apply_attention(model, "softmax")
    assert model.config._attn_implementation == ATTENTION_IMPLEMENTATION
    assert torch.allclose(model(IDS).logits, original, atol=1e-5)
    assert torch.allclose(model(IDS, attention_mask=PADDED).logits[1, 3:], original_padded[1, 3:], atol=1e-5)


@torch.no_grad()
def test_sofa_changes_logits_and_its_rows_sum_to_half_or_more(model):
    original = model(IDS).logits
    weights_before = [p.clone() for p in model.parameters()]
    apply_attention(model, "sofa")
    fast = model(IDS, attention_mask=PADDED).logits
    assert not torch.allclose(model(IDS).logits, original, atol=1e-3)
    output = model(IDS, attention_mask=PADDED, output_attentions=True)
    assert torch.allclose(output.logits, fast, atol=1e-5)  # eager (weights) and fast paths agree
    assert all(torch.equal(a, b) for a, b in zip(weights_before, model.parameters()))
    for weights in output.attentions:
        sums = weights.sum(-1)
        assert sums[0].min() >= 0.5 - 1e-6 and sums[0].max() < 1.0
        assert sums[1, :, 3:].min() >= 0.5 - 1e-6 and sums[1, :, 3:].max() < 1.0
        assert (sums[1, :, :3] == 0).all()  # padded queries see no key: zeros, not NaN


def test_every_normalizer_trains_without_nan(model):
    for normalizer in hf_normalizers():
        apply_attention(model, normalizer)
        model.zero_grad()
        model(IDS, attention_mask=PADDED, labels=IDS).loss.backward()
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads), normalizer


@pytest.mark.parametrize("normalizer", ["sofa", "softmax1"])
def test_fast_path_gradients_match_eager_inside_the_model(model, normalizer):
    apply_attention(model, normalizer)
    grads = []
    for output_attentions in (False, True):  # True runs the eager reference to return weights
        model.zero_grad()
        model(IDS, attention_mask=PADDED, labels=IDS, output_attentions=output_attentions).loss.backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
    assert len(grads[0]) == len(grads[1])
    for fast, eager in zip(*grads):
        assert torch.allclose(fast, eager, atol=1e-5, rtol=1e-4)


@torch.no_grad()
@pytest.mark.parametrize("normalizer", ["sofa", "clipped"])
def test_generation_with_kv_cache_matches_full_forward(model, normalizer):
    # alpha = 1: the default 12 over 64 positions clips nearly every weight of a short prefix.
    apply_attention(model, normalizer, **({"alpha": 1.0} if normalizer == "clipped" else {}))
    output = model.generate(IDS[:1, :6], max_new_tokens=4, do_sample=False, output_logits=True, return_dict_in_generate=True)
    generated = output.sequences
    full = model(generated).logits[0, 5:-1]
    assert torch.equal(full.argmax(-1), generated[0, 6:])
    assert torch.allclose(torch.cat(output.logits), full, atol=1e-5)


def test_clipped_length_defaults_to_the_maximum_positions(model):
    apply_attention(model, "clipped")
    assert model.config.sofa_attention["options"]["length"] == model.config.max_position_embeddings == 64
    apply_attention(model, "clipped", length=16)
    assert model.config.sofa_attention["options"]["length"] == 16


@torch.no_grad()
def test_gated_starts_close_saves_and_reloads(model, tmp_path):
    original = model(IDS).logits
    apply_attention(model, "gated")
    gate_keys = [name for name in model.state_dict() if ".sofa_gate." in name]
    assert len(gate_keys) == 2 * model.config.num_hidden_layers
    assert (model(IDS).logits - original).abs().max() < 0.02 * original.abs().max()
    for name, parameter in model.named_parameters():  # move the gates away from their start
        if ".sofa_gate." in name:
            parameter.normal_()
    gated = model(IDS).logits
    model.save_pretrained(tmp_path)
    reloaded = load_pretrained(str(tmp_path)).eval()
    assert reloaded.config.sofa_attention == {"normalizer": "gated", "options": {"gate_init": 0.99}}
    assert torch.allclose(reloaded(IDS).logits, gated, atol=1e-5)
    apply_attention(model, "sofa")  # switching away removes the gates
    assert not any(".sofa_gate." in name for name in model.state_dict())


@torch.no_grad()
def test_recorded_attention_survives_save_and_config_rebuild(model, tmp_path):
    apply_attention(model, "clipped", alpha=2.0)
    expected = model(IDS).logits
    model.save_pretrained(tmp_path)
    assert torch.allclose(load_pretrained(str(tmp_path)).eval()(IDS).logits, expected, atol=1e-5)
    rebuilt = restore_attention(AutoModelForCausalLM.from_config(model.config))
    assert rebuilt.config.sofa_attention["options"]["alpha"] == 2.0


def test_bad_requests_list_what_is_supported(model):
    with pytest.raises(ValueError, match="supported: softmax, sofa, softmax1, sofa_l1, sofa_meancenter, clipped, gated"):
        apply_attention(model, "sparsemax")
    with pytest.raises(ValueError, match="accepted: gate_init"):
        apply_attention(model, "gated", alpha=1.0)
    with pytest.raises(ValueError, match="gate_init must lie in"):
        apply_attention(model, "gated", gate_init=1.0)
    other = torch.nn.Linear(2, 2)
    other.config = type("Config", (), {"model_type": "bert"})()
    with pytest.raises(ValueError, match="model type 'bert'; supported: opt, qwen2, llama"):
        apply_attention(other, "sofa")
    assert supported_model_types() == ("opt", "qwen2", "llama")
