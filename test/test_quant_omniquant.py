"""OmniQuant: the LET fold is exact, training lowers the block error, bad input names its cause."""
import pytest
import torch

from quant_learned_testutils import (INPUT_IDS, MODELS, TINY_LMS, calibration, fold_random_transforms, model_with_attention,
                                     relative_error, tiny_opt)
from sofa_speechlm.quant import QuantConfigError, make_config, quantize
from sofa_speechlm.quant.blockwise import BlockwiseOptions, train_blockwise
from sofa_speechlm.quant.calibration import CalibrationError
from sofa_speechlm.quant.core import prepare
from sofa_speechlm.quant.io import load_quantized, read_quant_config, save_quantized


@pytest.mark.parametrize("family", list(MODELS))
@pytest.mark.parametrize("normalizer", ["softmax", "sofa"])
def test_let_fold_reproduces_full_precision_logits(family, normalizer):
    model = model_with_attention(family, normalizer)
    with torch.no_grad():
        reference = model(INPUT_IDS).logits
    config = make_config("omniquant", "W4A4", group_size=32)
    changed = fold_random_transforms(model, config, affine=False, shift_heads=normalizer == "softmax" and family.startswith("opt"))
    with torch.no_grad():
        folded = model(INPUT_IDS).logits
    assert changed > 0.05
    assert relative_error(folded, reference) <= 1e-4


def test_value_shift_is_not_exact_under_sofa():
    """Why v->out carries no shift with SOFA: its attention rows do not sum to 1."""
    model = model_with_attention("opt", "sofa")
    with torch.no_grad():
        reference = model(INPUT_IDS).logits
    fold_random_transforms(model, make_config("omniquant", "W4A4", group_size=32), affine=False, shift_heads=True)
    with torch.no_grad():
        assert relative_error(model(INPUT_IDS).logits, reference) > 1e-3


def test_defaults_follow_the_papers():
    config = make_config("omniquant", "W4A4")
    assert (config.group_size, config.epochs, config.let_lr, config.lwc_lr, config.alpha) == (128, 20, 5e-3, 1e-2, 0.75)
    assert make_config("omniquant", "W8A8").alpha == 0.5 and config.train_batch_size == 1
    assert config.let and config.lwc and config.shift and not config.w_symmetric and not config.a_symmetric
    weight_only = make_config("omniquant", "W4A16")
    assert weight_only.lwc and not weight_only.let and not weight_only.shift
    with pytest.raises(QuantConfigError, match="omniquant: alpha"):
        make_config("omniquant", "W8A8", alpha=1.5)


def test_training_and_deployment_use_the_same_transform():
    """Without updates, the folded, frozen layer reproduces the training forward's error."""
    model = model_with_attention("opt", "sofa")
    config = make_config("omniquant", "W4A4", group_size=32)
    prepare(model, config)
    options = BlockwiseOptions(epochs=0, let=True, lwc=True, alpha=0.5, let_lr=5e-3, lwc_lr=1e-2, shift=True)
    for record in train_blockwise(model, config, calibration(2), options):
        assert record["mse_final"] == pytest.approx(record["mse_init"], rel=1e-4)


def test_non_finite_activations_name_method_and_layer():
    model = model_with_attention("opt", "sofa")
    with torch.no_grad():
        model.model.decoder.layers[1].fc1.bias[0] = float("nan")
    with pytest.raises(CalibrationError, match=r"omniquant: NaN .*decoder layer 1"):
        quantize(model, make_config("omniquant", "W8A8", group_size=32, epochs=1), calibration(1))


@pytest.mark.parametrize("model_name, setting", [("sofa", "W4A4"), ("sofa_post_ln", "W8A8"), ("vanilla", "W8A8"),
                                                 ("qwen2_sofa", "W8A8"), ("llama_sofa", "W4A4")])
def test_training_lowers_the_block_error_and_the_variant_reloads(tmp_path, model_name, setting):
    model = TINY_LMS[model_name]()
    with torch.no_grad():
        full_precision = model(INPUT_IDS).logits
    quantize(model, make_config("omniquant", setting, group_size=32, epochs=4), calibration())
    assert len(model.quant_block_mse) == 2
    for record in model.quant_block_mse:
        assert record["mse_final"] < record["mse_init"], record
    with torch.no_grad():
        logits = model(INPUT_IDS).logits
    assert relative_error(logits, full_precision) < (0.05 if setting == "W8A8" else 0.5)
    name = "omniquant_" + setting.lower()
    save_quantized(model, tmp_path / name)
    assert read_quant_config(tmp_path / name)["hyperparameters"]["let"] is True
    reloaded = load_quantized(tmp_path / name, execution="simulated")
    with torch.no_grad():
        assert torch.equal(reloaded(INPUT_IDS).logits, logits)
