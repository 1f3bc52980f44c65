"""PTQ core on tiny random OPT (pre-/post-LN) and Qwen2 models: quantizer primitives, exact
folds, SmoothQuant vs RTN on an outlier channel, real vs simulated kernels, save/load, KV-cache
consistency, every registered method on SOFA and vanilla models, and bad input."""
import pytest
import torch
import yaml

from quant_testutils import REPO, VOCAB, build, relative_error, tiny_opt, token_batches
from sofa_speechlm.quant import load_quantized, make_config, method_names, quantize, read_quant_config, save_quantized
from sofa_speechlm.quant.architectures import ArchitectureError
from sofa_speechlm.quant.calibration import CalibrationError
from sofa_speechlm.quant.config import QuantConfigError, get_method
from sofa_speechlm.quant.core import prepare
from sofa_speechlm.bin.ptq_summary import dir_size
from sofa_speechlm.quant.io import WEIGHTS
from sofa_speechlm.quant.modules import QuantLinear, quant_linears, set_quantizers
from sofa_speechlm.quant.quantizer import ActQuantizer, PercentileClipper, WeightQuantizer, round_ste
from sofa_speechlm.quant import learned_transforms
from sofa_speechlm.quant.transforms import fold_in_place

TINY_HYPERPARAMETERS = yaml.safe_load((REPO / "conf/ptq/tiny.yaml").read_text())["methods"]
IDS = token_batches(1, batch=2, length=12, seed=3)[0]


def fast_config(method, setting):
    return make_config(method, setting, **(TINY_HYPERPARAMETERS.get(method) or {}))


# ---------------------------------------------------------------- quantizer primitives
@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("group_size", [None, 16])
def test_weight_quantizer_error_is_at_most_half_a_step_and_uses_2b_levels(symmetric, group_size):
    weight = torch.randn(8, 64)
    quantizer = WeightQuantizer(4, symmetric, group_size)
    codes, scale, zero = quantizer.params(weight)
    fake = quantizer(weight)
    step = scale.expand(-1, group_size or 64).reshape(weight.shape)
    assert ((fake - weight).abs() <= step / 2 + 1e-6).all()
    levels = codes.reshape(scale.shape[0], -1)
    assert levels.min() >= (-7 if symmetric else 0) and levels.max() <= (7 if symmetric else 15)
    assert torch.allclose(quantizer(fake), fake, atol=1e-6)  # idempotent up to float rounding


def test_straight_through_estimator_passes_gradients():
    x = torch.randn(5, requires_grad=True)
    round_ste(x * 3).sum().backward()
    assert torch.allclose(x.grad, torch.full((5,), 3.0))


def test_activation_quantizer_is_per_token_and_identity_at_16_bits():
    x = torch.randn(3, 7, 32)
    x[0, 0] *= 100  # one loud token must not change the others' grid
    q = ActQuantizer(8)(x)
    assert torch.equal(q[1:], ActQuantizer(8)(x[1:]))
    assert torch.equal(ActQuantizer(16)(x), x)


def test_percentile_clipping_bounds_each_row_at_its_quantile():
    weight = torch.randn(4, 200)
    quantizer = WeightQuantizer(8, True)
    quantizer.clipper = PercentileClipper(0.05)
    quantizer.clipper.set_weight(quantizer.groups(weight))
    fake = quantizer(weight)
    threshold = torch.quantile(weight.abs(), 0.95, dim=1, keepdim=True)
    assert torch.allclose(quantizer.clipper.threshold, threshold, rtol=1e-6)
    assert torch.allclose(fake.abs().amax(1, keepdim=True), threshold, rtol=1e-2)


# ---------------------------------------------------------------- exact transforms
@pytest.mark.parametrize("family", ["opt_pre_ln", "opt_post_ln", "qwen2"])
@pytest.mark.parametrize("attention", ["sdpa", "sofa"])
def test_smoothquant_fold_reproduces_full_precision_logits(family, attention):
    model = build(family, attention)
    with torch.no_grad():
        reference = model(IDS).logits
    config = make_config("smoothquant", "W4A4")
    prepare(model, config)
    get_method("smoothquant").quantize(model, config, token_batches())  # quantizers still disabled
    changed = [m for _, m in quant_linears(model) if m.input_scale is not None]
    assert bool(changed) == (family == "opt_post_ln")  # post-LN: explicit pre-scale, else folded
    with torch.no_grad():
        assert relative_error(model(IDS).logits, reference) <= 1e-4


@pytest.mark.parametrize("family", ["opt_pre_ln", "qwen2"])
def test_value_output_and_query_key_folds_are_exact_with_grouped_heads(family):
    model = build(family, "sofa")
    with torch.no_grad():
        reference = model(IDS).logits
        config = model.config
        kv = getattr(config, "num_key_value_heads", config.num_attention_heads)
        head_dim = config.hidden_size // config.num_attention_heads
        groups = config.num_attention_heads // kv
        for layer in (model.model.decoder.layers if family.startswith("opt") else model.model.layers):
            attention = layer.self_attn
            out = getattr(attention, "out_proj", None) or attention.o_proj
            modules = dict(q=attention.q_proj, k=attention.k_proj, v=attention.v_proj, o=out)
            fold_in_place(modules, learned_transforms.fold_heads_pair, "v", "o", groups, scale=torch.rand(kv, head_dim) + 0.5)
            if family.startswith("opt"):  # no RoPE: any per-channel q/k scale is exact
                fold_in_place(modules, learned_transforms.fold_query_key, "q", "k", groups, scale=torch.rand(kv, head_dim) + 0.5)
        assert relative_error(model(IDS).logits, reference) <= 1e-4


def test_explicit_input_smoothing_with_shift_composes_exactly():
    torch.manual_seed(0)
    linear = torch.nn.Linear(16, 8)
    module = QuantLinear.from_linear(linear, w_bits=4, a_bits=4)
    module.set_quantizers(False)
    x = torch.randn(5, 16)
    for _ in range(2):  # an earlier pre-transform followed by another
        module.set_input_smoothing(torch.rand(16) + 0.5, torch.randn(16))
    with torch.no_grad():
        assert torch.allclose(module(x), linear(x), atol=1e-5)


# ---------------------------------------------------------------- accuracy
def planted_outlier_opt():
    """Pre-LN OPT whose norms emit one channel 40x louder than the rest (an LLM-like outlier)."""
    model = tiny_opt(hidden=64, ffn=256, seed=2)
    with torch.no_grad():
        for layer in model.model.decoder.layers:
            for norm in (layer.self_attn_layer_norm, layer.final_layer_norm):
                norm.weight[5] = 40.0
            for linear in (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj, layer.fc1):
                linear.weight[:, 5] /= 40.0  # keep the function tame: the outlier is in the activation only
    return model


def test_smoothquant_beats_rtn_at_w8a8_on_an_activation_outlier_channel():
    batches = token_batches(4, batch=4, length=24, seed=5)
    errors = {}
    for method in ("rtn", "smoothquant"):
        model = planted_outlier_opt()
        with torch.no_grad():
            reference = model(IDS).logits
        quantize(model, make_config(method, "W8A8"), batches)
        with torch.no_grad():
            errors[method] = relative_error(model(IDS).logits, reference)
    assert errors["smoothquant"] < 0.7 * errors["rtn"], errors


@pytest.mark.parametrize("family", ["opt_pre_ln", "opt_post_ln", "qwen2"])
def test_w8a8_is_close_to_full_precision(family):
    model = build(family, "sofa")
    with torch.no_grad():
        reference = model(IDS).logits
    quantize(model, make_config("smoothquant", "W8A8"), token_batches())
    with torch.no_grad():
        assert relative_error(model(IDS).logits, reference) < 0.05


# ---------------------------------------------------------------- real kernels, storage
@pytest.mark.parametrize("method,setting", [("smoothquant", "W8A8"), ("rtn", "W4A16")])
@pytest.mark.parametrize("family", ["opt_post_ln", "qwen2"])
def test_real_kernels_agree_with_the_simulated_path(tmp_path, method, setting, family):
    model = quantize(build(family, "sofa"), make_config(method, setting), token_batches())
    save_quantized(model, tmp_path)
    simulated = load_quantized(tmp_path, execution="simulated")
    real = load_quantized(tmp_path, execution="real")
    assert real.quant_execution == "real" and any(m.kernel is not None for _, m in quant_linears(real))
    with torch.no_grad():
        assert relative_error(real(IDS).logits, simulated(IDS).logits) <= 1e-4


@pytest.mark.parametrize("split", [True, False])
def test_int8_linear_accumulates_exactly_even_at_the_saturating_extremes(split, monkeypatch):
    from sofa_speechlm.quant import real

    linear = QuantLinear.from_linear(torch.nn.Linear(64, 48), w_bits=8, a_bits=8)
    with torch.no_grad():
        linear.weight[::2] = linear.weight[::2].sign()  # rows of +-127 codes only
    linear.freeze()
    saturates = real.onednn_int8_saturates()
    monkeypatch.setattr(real, "onednn_int8_saturates", lambda: split)
    kernel = real._kernel_for(linear, "W8A8", "cpu")
    x = torch.randn(6, 64)
    x[0], x[1] = 1.0, -1.0  # all +127 / all -127 codes: int16 pair sums would overflow
    codes, scale, _ = linear.grid
    x_scale = x.abs().amax(-1, keepdim=True) / 127
    exact = (x / x_scale).round().double() @ codes.double().t() * x_scale.double() * scale.double().t() + linear.bias.double()
    with torch.no_grad():
        if split or not saturates:
            assert (kernel(x).double() - exact).abs().max() <= 1e-5 * exact.abs().max()
            assert relative_error(kernel(x), linear(x)) <= 1e-6
        else:  # the single pass is what a CPU without VNNI cannot run exactly
            assert (kernel(x).double() - exact).abs().max() > 1e-3 * exact.abs().max()


def test_w4a4_has_no_kernel_and_says_simulated(tmp_path):
    save_quantized(quantize(build("opt_pre_ln", "sofa"), make_config("rtn", "W4A4")), tmp_path)
    assert read_quant_config(tmp_path)["execution"] == "simulated"
    assert load_quantized(tmp_path).quant_execution == "simulated"
    with pytest.raises(ValueError, match="no real kernel"):
        load_quantized(tmp_path, execution="real")


def test_w4a16_dir_stores_packed_weights_about_4x_smaller_than_fp16(tmp_path):
    model = tiny_opt(hidden=256, ffn=1024)
    linear_fp16 = sum(m.weight.numel() * 2 for m in model.modules() if isinstance(m, torch.nn.Linear) and m.weight.shape[0] != VOCAB)
    quantize(model, make_config("rtn", "W4A16"))
    save_quantized(model, tmp_path)
    from safetensors import safe_open

    with safe_open(str(tmp_path / WEIGHTS), "pt") as f:
        packed = sum(f.get_tensor(k).numel() * f.get_tensor(k).element_size()
                     for k in f.keys() if k.endswith((".qweight", ".qscale", ".qzero")))
        assert all(f.get_tensor(k).dtype == torch.uint8 for k in f.keys() if k.endswith(".qweight"))
    assert 3.5 <= linear_fp16 / packed <= 4.0, linear_fp16 / packed
    fp16_model = sum(p.numel() * 2 for p in model.parameters())
    assert dir_size(tmp_path) < 0.4 * fp16_model


# ---------------------------------------------------------------- every method, save/load, decoding
METHODS = [m for m in method_names()]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("attention", ["sdpa", "sofa"])
def test_every_method_quantizes_saves_and_reloads_to_the_same_logits(tmp_path, method, attention):
    model = build("opt_pre_ln", attention)
    with torch.no_grad():
        reference = model(IDS).logits
    quantize(model, fast_config(method, "W4A4"), token_batches())
    with torch.no_grad():
        logits = model(IDS).logits
    assert torch.isfinite(logits).all() and not torch.equal(logits, reference)
    save_quantized(model, tmp_path)
    reloaded = load_quantized(tmp_path)
    assert reloaded.config.sofa_attention["normalizer"] == ("sofa" if attention == "sofa" else "softmax")
    with torch.no_grad():
        assert torch.equal(reloaded(IDS).logits, logits)


@pytest.mark.parametrize("family", ["opt_pre_ln", "qwen2"])
def test_kv_cached_decoding_equals_the_full_forward_when_quantized(family):
    model = quantize(build(family, "sofa"), make_config("smoothquant", "W4A4"), token_batches())
    with torch.no_grad():
        full = model(IDS).logits
        prefix = model(IDS[:, :8], use_cache=True)
        past, steps = prefix.past_key_values, []
        for t in range(8, IDS.shape[1]):
            out = model(IDS[:, t:t + 1], past_key_values=past, use_cache=True)
            past = out.past_key_values
            steps.append(out.logits)
    assert torch.allclose(torch.cat(steps, 1), full[:, 8:], atol=1e-4)
    generated = model.generate(IDS[:1, :4], max_new_tokens=5, do_sample=False)
    assert generated.shape == (1, 9)


def test_disabling_quantizers_of_an_unfrozen_model_restores_full_precision():
    model = build("opt_pre_ln", "sofa")
    with torch.no_grad():
        reference = model(IDS).logits
    config = make_config("rtn", "W4A4")
    prepare(model, config)
    set_quantizers(model, True)
    with torch.no_grad():
        assert relative_error(model(IDS).logits, reference) > 1e-3
        set_quantizers(model, False)
        assert relative_error(model(IDS).logits, reference) <= 1e-6


# ---------------------------------------------------------------- bad input
def test_unknown_method_setting_and_hyperparameter_are_named():
    with pytest.raises(QuantConfigError, match="unsupported PTQ method 'gptq'.*rtn"):
        make_config("gptq", "W8A8")
    with pytest.raises(QuantConfigError, match="unsupported setting 'W3A3'"):
        make_config("rtn", "W3A3")
    with pytest.raises(QuantConfigError, match="smoothquant: unknown hyperparameter"):
        make_config("smoothquant", "W8A8", beta=1)
    with pytest.raises(QuantConfigError, match="alpha"):
        make_config("smoothquant", "W8A8", alpha=2)


def test_missing_or_empty_calibration_is_an_error():
    with pytest.raises(CalibrationError, match="smoothquant: needs at least 1 calibration batch"):
        quantize(build("opt_pre_ln", "sofa"), make_config("smoothquant", "W8A8"), [])
    with pytest.raises(CalibrationError, match="batch 0 is empty"):
        quantize(build("opt_pre_ln", "sofa"), make_config("smoothquant", "W8A8"), [torch.zeros(1, 0, dtype=torch.long)])


def test_nan_during_calibration_names_the_layer():
    model = build("opt_pre_ln", "sofa")
    with torch.no_grad():
        model.model.decoder.layers[1].self_attn_layer_norm.weight[3] = float("nan")
    with pytest.raises(CalibrationError, match=r"smoothquant: NaN .*layers\.1\.self_attn\.q_proj"):
        quantize(model, make_config("smoothquant", "W8A8"), token_batches())


def test_model_lacking_modules_is_named():
    model = build("opt_pre_ln", "sofa")
    del model.model.decoder.layers[0].fc1
    with pytest.raises(ArchitectureError, match="rtn: layer 0 lacks the module 'fc1'"):
        quantize(model, make_config("rtn", "W8A8"))
    from transformers import GPT2Config, GPT2LMHeadModel

    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=VOCAB))
    with pytest.raises(ArchitectureError, match="model type 'gpt2' is not supported"):
        quantize(gpt2, make_config("rtn", "W8A8"))


def test_group_size_that_does_not_divide_a_layer_is_named():
    with pytest.raises(ValueError, match="layer 0 'self_attn.q_proj' has 64 inputs, not a multiple of the group size 48"):
        quantize(build("opt_pre_ln", "sofa"), make_config("rtn", "W4A16", group_size=48))


def test_weight_quantizer_names_a_group_size_that_does_not_divide_the_weight():
    with pytest.raises(ValueError, match=r"group size 128 does not divide the input size 200 of a \(4, 200\) weight"):
        WeightQuantizer(4, group_size=128).groups(torch.randn(4, 200))
