"""AffineQuant: the affine fold is exact, the gradual mask grows from the identity, training lowers
the block error, bad settings are refused."""
import pytest
import torch

from quant_learned_testutils import (INPUT_IDS, MODELS, TINY_LMS, calibration, fold_random_transforms,
                                     model_with_attention, relative_error)
from sofa_speechlm.quant import QuantConfigError, make_config, quantize
from sofa_speechlm.quant.io import load_quantized, read_quant_config, save_quantized
from sofa_speechlm.quant.blockwise import train_blockwise
from sofa_speechlm.quant.core import prepare
from sofa_speechlm.quant.learned_transforms import band_mask
from sofa_speechlm.quant.let import LayerTransform


@pytest.mark.parametrize("family", list(MODELS))
@pytest.mark.parametrize("normalizer", ["softmax", "sofa"])
def test_affine_fold_reproduces_full_precision_logits(family, normalizer):
    model = model_with_attention(family, normalizer)
    with torch.no_grad():
        reference = model(INPUT_IDS).logits
    config = make_config("affinequant", "W4A4", epochs=2)
    changed = fold_random_transforms(model, config, affine=True, shift_heads=normalizer == "softmax" and family.startswith("opt"))
    with torch.no_grad():
        folded = model(INPUT_IDS).logits
    assert changed > 0.05
    assert relative_error(folded, reference) <= 1e-4


def test_gradual_mask_grows_from_the_identity():
    size, epochs, sf = 8, 4, 0.01
    assert torch.equal(band_mask(size, 0, epochs, sf), torch.eye(size))
    # epoch 1 of 4: band floor(7/3 * 1) + 1 = 3 -> |i-j| in {1, 2} at sf
    expected = torch.eye(size)
    for i in range(size):
        for j in range(size):
            if 0 < abs(i - j) < 3:
                expected[i, j] = sf
    assert torch.equal(band_mask(size, 1, epochs, sf), expected)
    last = band_mask(size, epochs - 1, epochs, sf)
    assert torch.equal(last, torch.full((size, size), sf).fill_diagonal_(1.0))


def test_one_epoch_is_refused():
    with pytest.raises(QuantConfigError, match="affinequant: the gradual mask needs epochs > 1"):
        make_config("affinequant", "W4A4", epochs=1)
    with pytest.raises(ValueError, match="epochs > 1"):
        band_mask(4, 0, 1, 0.01)


def test_defaults_follow_the_paper():
    config = make_config("affinequant", "W4A4")
    assert config.stability_factor == 0.01 and config.epochs == 20 and config.qk_matrix and config.let
    assert config.group_size is None  # the reference's per-channel default; W4A16 uses groups of 128
    assert make_config("affinequant", "W4A16").group_size == 128


def test_trained_matrices_leave_the_diagonal(monkeypatch):
    """The v->out matrices learn off-diagonal entries once the mask's band opens."""
    model = model_with_attention("opt", "sofa")
    config = make_config("affinequant", "W4A4", group_size=32, epochs=3, stability_factor=1.0)
    prepare(model, config)
    seen = []
    forward = LayerTransform.forward

    def recording_forward(self, params):
        seen.append(self.matrices_masked()[0].detach().clone())
        return forward(self, params)

    monkeypatch.setattr(LayerTransform, "forward", recording_forward)
    train_blockwise(model, config, calibration(2), config.blockwise_options())
    final = seen[-1]
    off_diagonal = final - torch.diag_embed(torch.diagonal(final, dim1=-2, dim2=-1))
    assert off_diagonal.abs().max() > 1e-4


@pytest.mark.parametrize("model_name, setting", [("sofa", "W4A4"), ("sofa_post_ln", "W8A8"), ("vanilla", "W8A8"),
                                                 ("qwen2_sofa", "W8A8"), ("llama_sofa", "W4A4")])
def test_training_lowers_the_block_error_and_the_variant_reloads(tmp_path, model_name, setting):
    model = quantize(TINY_LMS[model_name](), make_config("affinequant", setting, group_size=32, epochs=4), calibration())
    assert len(model.quant_block_mse) == 2
    for record in model.quant_block_mse:
        assert record["mse_final"] < record["mse_init"], record
    with torch.no_grad():
        logits = model(INPUT_IDS).logits
    name = "affinequant_" + setting.lower()
    save_quantized(model, tmp_path / name)
    assert read_quant_config(tmp_path / name)["hyperparameters"]["stability_factor"] == 0.01
    reloaded = load_quantized(tmp_path / name, execution="simulated")
    with torch.no_grad():
        assert torch.equal(reloaded(INPUT_IDS).logits, logits)
