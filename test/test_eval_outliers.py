"""Outlier hooks: a planted activation outlier shows up in the right layer and modality;
attention maps of the last layer (rows sum to 1 under softmax, below 1 under SOFA)."""

import math

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM, Qwen2Config, Qwen2ForCausalLM

from sofa_speechlm.attention import apply_attention
from sofa_speechlm.eval.attention_maps import last_layer_attention
from sofa_speechlm.eval.outliers import collect_outliers, hooked_modules, piece_kind, position_mask, sequence_stats

VOCAB = 50
UNIT_IDS = set(range(30, 45))  # token ids that stand for unit pieces in these tests
PLANTED = 1000.0


def tiny_model(model_type):
    torch.manual_seed(0)
    if model_type == "opt":
        config = OPTConfig(vocab_size=VOCAB, hidden_size=32, word_embed_proj_dim=32, num_hidden_layers=3,
                           num_attention_heads=4, ffn_dim=64, max_position_embeddings=128, dropout=0.0)
        return OPTForCausalLM(config).eval()
    family = {"qwen2": (Qwen2Config, Qwen2ForCausalLM), "llama": (LlamaConfig, LlamaForCausalLM)}
    config_class, model_class = family[model_type]
    config = config_class(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128)
    return model_class(config).eval()


def batches():
    """Text-only, unit-only and mixed sequences with their modality masks (unequal lengths: padding)."""
    text = [[49, 3, 4, 5, 6], [49, 7, 8, 9]]
    speech = [[49, 30, 31, 32, 33, 34], [49, 35, 36]]
    mixed = [[49, 2, 30, 31, 1, 10, 11], [49, 1, 12, 2, 40, 41]]
    return [
        ("text", text, [[t not in UNIT_IDS and t not in (49, 1, 2) for t in s] for s in text]),
        ("speech", speech, [[t in UNIT_IDS for t in s] for s in speech]),
        ("speech+text", mixed, [[True] * len(s) for s in mixed]),
    ]


def plant_outlier(model, layer: int):
    """Add PLANTED to one channel of layer `layer`'s FFN output at unit-token positions."""
    current = {}
    model.register_forward_pre_hook(lambda m, args, kwargs: current.update(ids=kwargs["input_ids"]), with_kwargs=True)
    ffn = next(module for name, index, kind, module in hooked_modules(model) if index == layer and kind == "ffn_out_proj")

    def add(module, args, output):
        units = torch.isin(current["ids"], torch.tensor(sorted(UNIT_IDS)))
        output = output.clone()
        output[..., 5] += PLANTED * units.reshape(output.shape[:-1])  # OPT's fc2 output is [B*T, d]
        return output

    ffn.register_forward_hook(add)


@pytest.mark.parametrize("model_type", ["opt", "qwen2", "llama"])
def test_planted_outlier_found_in_its_layer_and_modality(model_type):
    model = tiny_model(model_type)
    clean = collect_outliers(model, batches())
    plant_outlier(model, layer=1)
    stats = collect_outliers(model, batches())
    assert stats["num_layers"] == 3
    speech = stats["per_layer"]["speech"]["max_inf_norm"]
    assert speech[0] < 100 and speech[1] > PLANTED * 0.9, speech
    assert stats["per_layer"]["speech+text"]["max_inf_norm"][1] > PLANTED * 0.9
    assert stats["per_layer"]["text"]["max_inf_norm"] == pytest.approx(clean["per_layer"]["text"]["max_inf_norm"])
    # It appears at layer 1 (later layers carry it on the residual stream).
    assert min(i for i, norm in enumerate(speech) if norm > PLANTED * 0.9) == 1
    assert stats["modules"]["layers.1." + ("fc2" if model_type == "opt" else "mlp.down_proj")]["speech"]["max_inf_norm"] > PLANTED
    assert stats["summary"]["speech"]["max_ffn_inf_norm"] > PLANTED * 0.9
    # One huge channel among 32 * positions values: heavy-tailed, far above a Gaussian's 3.
    assert stats["summary"]["speech"]["max_kurtosis"] > 10 > clean["summary"]["speech"]["max_kurtosis"]
    kinds = {stats["modules"][name]["kind"] for name in stats["modules"]}
    assert kinds == {"layer", "attn_out_proj", "ffn_out_proj", "attn_norm", "ffn_norm"}


def test_sequence_stats_match_pearson_kurtosis_and_ignore_masked_positions():
    torch.manual_seed(0)
    x = torch.randn(2, 6, 8)
    x[0, 5] = 1e4  # masked out below
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]], dtype=torch.bool)
    norms, kurt, present = sequence_stats(x, mask)
    flat = x[0, :5].reshape(-1)
    expected = ((flat - flat.mean()) ** 4).mean() / flat.std() ** 4
    assert present.tolist() == [True, True]
    assert norms[0] == pytest.approx(flat.abs().max().item()) and norms[0] < 100
    assert kurt[0] == pytest.approx(expected.item(), rel=1e-4)


def test_piece_kinds_and_position_masks():
    assert piece_kind("\u2581\u4e00\u4e01") == "unit" and piece_kind("\u4e05") == "unit"
    assert piece_kind("\u2581cat") == "text" and piece_kind("s") == "text"
    assert piece_kind("<generatetext>") == "special" and piece_kind("<sos/eos>") == "special" and piece_kind("\u2581") == "special"
    assert position_mask(["<sos/eos>", "\u2581\u4e00", "\u2581hi"], "unit") == [False, True, False]
    assert position_mask(["<sos/eos>", "\u2581\u4e00"], "all") == [True, True]


def test_unknown_model_type_is_named():
    class Fake(torch.nn.Module):
        config = type("C", (), {"model_type": "gpt2"})()

    with pytest.raises(ValueError, match="gpt2"):
        hooked_modules(Fake())


@pytest.mark.parametrize("model_type", ["opt", "qwen2", "llama"])
def test_last_layer_attention_rows(model_type):
    model = tiny_model(model_type)
    ids = [49, 3, 30, 31, 4, 5]
    softmax = last_layer_attention(model, ids)  # vanilla HF model: switched to the registered softmax
    assert softmax.shape == (6, 6) and softmax.sum(axis=1) == pytest.approx([1.0] * 6, abs=1e-5)
    assert abs(softmax[0, 1:]).max() == 0.0  # causal
    apply_attention(model, "sofa")
    sofa = last_layer_attention(model, ids)
    assert (sofa.sum(axis=1) < 1.0).all() and math.isfinite(sofa.sum())
