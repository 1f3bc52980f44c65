"""PTQ of a tiny random Llama (SmolLM2's layout: RMSNorm pairs, 4 query / 2 KV heads, RoPE, tied
embeddings) through the architecture table: SmoothQuant folds exactly, quantizes, saves and reloads."""
import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from quant_testutils import VOCAB, _randomize_norms, relative_error, token_batches
from sofa_speechlm.attention import apply_attention
from sofa_speechlm.quant import load_quantized, make_config, quantize, save_quantized
from sofa_speechlm.quant.methods.smoothquant import smooth


def tiny_llama(attention: str):
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, intermediate_size=128,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                         tie_word_embeddings=True)
    model = _randomize_norms(LlamaForCausalLM(config).eval())
    return apply_attention(model, attention)


@torch.no_grad()
def test_smoothing_folds_into_rms_norms_without_changing_the_output():
    model = tiny_llama("sofa")
    ids = token_batches(1)[0]
    before = model(ids).logits
    norm = model.model.layers[0].input_layernorm.weight.clone()
    smooth(model, make_config("smoothquant", "W8A8"), token_batches())
    assert not torch.allclose(model.model.layers[0].input_layernorm.weight, norm)
    torch.testing.assert_close(model(ids).logits, before, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("attention", ["sofa", "softmax"])
@torch.no_grad()
def test_smoothquant_w8a8_stays_close_and_reloads(attention, tmp_path):
    model = tiny_llama(attention)
    ids = token_batches(1, seed=5)[0]
    reference = model(ids).logits
    quantized = quantize(model, make_config("smoothquant", "W8A8"), token_batches())
    logits = quantized(ids).logits
    assert torch.isfinite(logits).all() and not torch.equal(logits, reference)
    assert relative_error(logits, reference) < 0.05
    save_quantized(quantized, tmp_path / "sq")
    reloaded = load_quantized(tmp_path / "sq", execution="simulated")
    torch.testing.assert_close(reloaded(ids).logits, logits, rtol=0, atol=1e-5)


@torch.no_grad()
def test_rtn_w4a4_quantizes_every_llama_linear():
    from sofa_speechlm.quant.modules import QuantLinear

    model = quantize(tiny_llama("sofa"), make_config("rtn", "W4A4"))
    names = {name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, QuantLinear)}
    assert names == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert torch.isfinite(model(token_batches(1)[0]).logits).all()


def test_smollm2_ptq_config_fits_every_smollm2_layer(repo):
    """conf/ptq/smollm2.yaml quantizes every layer of SmolLM2's widths (576, 1536) with run.sh's
    default methods and settings; tiny.yaml's groups of 128 stop on them, naming the layer."""
    from sofa_speechlm.quant.core import replace_linears
    from sofa_speechlm.quant.plan import plan_variants, read_ptq_config

    def smollm2_widths():
        config = LlamaConfig(vocab_size=VOCAB, hidden_size=576, num_hidden_layers=1, intermediate_size=1536,
                             num_attention_heads=9, num_key_value_heads=3, max_position_embeddings=128)
        return LlamaForCausalLM(config)

    methods, settings = ["rtn", "smoothquant", "omniquant", "affinequant"], ["W8A8", "W4A4"]
    for variant in plan_variants(methods, settings, read_ptq_config(repo / "conf/ptq/smollm2.yaml")):
        replace_linears(smollm2_widths(), variant.config)
    tiny = plan_variants(["omniquant"], ["W8A8"], read_ptq_config(repo / "conf/ptq/tiny.yaml"))[0]
    with pytest.raises(ValueError, match="layer 0 'self_attn.q_proj' has 576 inputs, not a multiple of the group size 128"):
        replace_linears(smollm2_widths(), tiny.config)
