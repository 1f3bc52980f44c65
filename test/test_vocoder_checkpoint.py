"""Published speech-resynthesis / fairseq checkpoint layout: loading, saving, mismatches; unit input checks."""

import json

import pytest
import torch

from sofa_speechlm.data import DataDirError
from sofa_speechlm.speech.units import read_units
from sofa_speechlm.vocoder import CodeHiFiGANGenerator, VocoderConfigError, load_generator, save_published
from vocoder_testutils import tiny_config, write_published_checkpoint


def output(generator, units):
    with torch.no_grad():
        return generator.eval()(units)


@pytest.mark.parametrize("extras", [{}, {"multispkr": True, "num_speakers": 4}, {"dur_predictor_params": dict(
    encoder_embed_dim=8, var_pred_hidden_dim=8, var_pred_kernel_size=3, var_pred_dropout=0.5)}])
def test_published_layout_loads_with_identical_output(tmp_path, extras):
    torch.manual_seed(0)
    generator = CodeHiFiGANGenerator(tiny_config(**extras))
    path = write_published_checkpoint(generator, tmp_path)
    saved_keys = torch.load(path)["generator"]
    assert "conv_pre.weight_g" in saved_keys and "resblocks.0.convs1.2.weight_v" in saved_keys and "dict.weight" in saved_keys
    loaded = load_generator(path)  # config.json beside it, with keys we do not use
    units = torch.randint(0, 20, (2, 6))
    speakers = torch.tensor([1, 3]) if extras.get("multispkr") else None
    assert torch.equal(output(loaded, units) if speakers is None else loaded(units, speakers).detach(),
                       output(generator, units) if speakers is None else generator(units, speakers).detach())
    for key, value in generator.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key


def test_folded_weight_norm_checkpoint_loads(tmp_path):
    generator = CodeHiFiGANGenerator(tiny_config())
    path = write_published_checkpoint(generator, tmp_path, fold_weight_norm=True)
    units = torch.randint(0, 20, (1, 6))
    torch.testing.assert_close(output(load_generator(path), units), output(generator, units), rtol=1e-4, atol=1e-6)


def test_save_published_round_trip_uses_published_keys(tmp_path):
    generator = CodeHiFiGANGenerator(tiny_config())
    save_published(generator, tmp_path / "generator.pth")
    keys = set(torch.load(tmp_path / "generator.pth")["generator"])
    assert "ups.4.weight_g" in keys and not any("parametrizations" in key for key in keys)
    assert json.loads((tmp_path / "config.json").read_text())["upsample_initial_channel"] == 32
    units = torch.randint(0, 20, (1, 4))
    assert torch.equal(output(load_generator(tmp_path / "generator.pth"), units), output(generator, units))


def test_config_mismatch_names_the_key(tmp_path):
    path = write_published_checkpoint(CodeHiFiGANGenerator(tiny_config()), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["upsample_initial_channel"] = 64
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(VocoderConfigError, match=r"conv_pre\.(weight_v|bias).*checkpoint \(32"):
        load_generator(path)
    config.update(upsample_initial_channel=32, multispkr=True, model_in_dim=16)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(VocoderConfigError, match=r"missing keys \['spkr.weight'\]"):
        load_generator(path)


def test_not_a_vocoder_checkpoint_is_rejected(tmp_path):
    torch.save({"model": {}}, tmp_path / "other.pt")
    with pytest.raises(VocoderConfigError, match="expected a dict with key 'generator'.*'model'"):
        load_generator(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_generator(tmp_path / "missing.pt")


@pytest.mark.parametrize(
    "line, message",
    [
        ("uttB 1 2 20 3", r"utterance uttB: unit id 20 at position 2 is outside .*\[0, 19\]"),
        ("uttB 1 -1", r"utterance uttB: unit id -1"),
        ("uttB", r"utterance uttB has no units"),
        ("uttB 1 x2", r"utterance uttB: unit 'x2' is not an integer"),
    ],
)
def test_bad_units_name_the_utterance(tmp_path, line, message):
    path = tmp_path / "units"
    path.write_text(f"uttA 0 19 4\n{line}\n")
    with pytest.raises(DataDirError, match=message):
        read_units(path, num_embeddings=20)


def test_f0_conditioned_published_config_is_refused(tmp_path):
    path = write_published_checkpoint(CodeHiFiGANGenerator(tiny_config()), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "f0": True, "f0_quantizer_path": "f0_vq.pt"}))
    with pytest.raises(VocoderConfigError, match=r"config.json: vocoders conditioned on \['f0'\] are not supported"):
        load_generator(path)


DUR_PARAMS = dict(encoder_embed_dim=8, var_pred_hidden_dim=8, var_pred_kernel_size=3, var_pred_dropout=0.5)


@pytest.mark.parametrize("weight", ["absent", 0.0])
def test_speech_resynthesis_config_without_duration_weight_loads_without_predictor(tmp_path, weight):
    """speech-resynthesis builds its duration predictor only with a non-zero dur_prediction_weight."""
    generator = CodeHiFiGANGenerator(tiny_config())
    path = write_published_checkpoint(generator, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["dur_predictor_params"] = DUR_PARAMS
    if weight != "absent":
        config["dur_prediction_weight"] = weight
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = load_generator(path)
    assert loaded.dur_predictor is None and loaded.config.dur_predictor_params == DUR_PARAMS
    units = torch.randint(0, 20, (1, 6))
    assert torch.equal(output(loaded, units), output(generator, units))
    with pytest.raises(ValueError, match="no duration predictor"):
        loaded.predict_durations(units[0])
    save_published(loaded, tmp_path / "again" / "generator.pth")  # its config.json now says weight 0
    assert load_generator(tmp_path / "again" / "generator.pth").dur_predictor is None


def test_duration_weight_without_predictor_weights_is_a_mismatch(tmp_path):
    path = write_published_checkpoint(CodeHiFiGANGenerator(tiny_config()), tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config.update(dur_predictor_params=DUR_PARAMS, dur_prediction_weight=1.0)
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(VocoderConfigError, match=r"missing keys \['dur_predictor\."):
        load_generator(path)


def test_zero_duration_weight_builds_no_predictor_and_negative_is_refused():
    assert CodeHiFiGANGenerator(tiny_config(dur_predictor_params=DUR_PARAMS, dur_prediction_weight=0)).dur_predictor is None
    assert CodeHiFiGANGenerator(tiny_config(dur_predictor_params=DUR_PARAMS)).dur_predictor is not None
    with pytest.raises(VocoderConfigError, match="dur_prediction_weight: expected a number >= 0"):
        tiny_config(dur_predictor_params=DUR_PARAMS, dur_prediction_weight=-1)
