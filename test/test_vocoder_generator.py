"""The unit HiFi-GAN generator: output length, speakers, durations, weight-norm folding, config checks."""

import numpy as np
import pytest
import torch

from sofa_speechlm.vocoder import CodeHiFiGANGenerator, VocoderConfig, VocoderConfigError, synthesize
from vocoder_testutils import HOP, tiny_config


@pytest.mark.parametrize("frames", [1, 7, 25])
def test_t_units_give_320_t_samples(frames):
    generator = CodeHiFiGANGenerator(tiny_config()).eval()
    units = torch.randint(0, 20, (2, frames))
    with torch.no_grad():
        audio = generator(units)
    assert audio.shape == (2, frames * HOP)
    assert torch.isfinite(audio).all() and audio.abs().max() <= 1.0


def test_paper_config_is_the_default_and_shapes_match_the_paper():
    config = VocoderConfig()
    assert (config.num_embeddings, config.embedding_dim, config.upsample_initial_channel) == (200, 128, 512)
    assert config.upsample_rates == [5, 4, 4, 2, 2] and config.upsample_kernel_sizes == [11, 8, 8, 4, 4]
    assert config.hop_length == 320 and config.learning_rate == 0.0008 and config.batch_size == 64
    generator = CodeHiFiGANGenerator(config)
    assert generator.conv_pre.weight.shape == (512, 128, 7)
    assert len(generator.resblocks) == 15 and generator.conv_post.weight.shape == (1, 16, 7)


def test_speaker_embedding_changes_output_and_is_required():
    generator = CodeHiFiGANGenerator(tiny_config(multispkr=True, num_speakers=3)).eval()
    units = torch.randint(0, 20, (1, 5))
    with torch.no_grad():
        first, second = generator(units, torch.tensor([0])), generator(units, torch.tensor([1]))
    assert first.shape == (1, 5 * HOP) and not torch.equal(first, second)
    with pytest.raises(ValueError, match="speaker"):
        generator(units)


def test_deduplicated_units_are_expanded_by_predicted_durations():
    config = tiny_config(dur_predictor_params=dict(encoder_embed_dim=8, var_pred_hidden_dim=8, var_pred_kernel_size=3, var_pred_dropout=0.5))
    generator = CodeHiFiGANGenerator(config).eval()
    units = torch.tensor([3, 5, 3, 9])
    durations = generator.predict_durations(units)
    assert durations.shape == (4,) and (durations >= 1).all()
    (utt_id, audio), = synthesize(generator, {"u1": units}, deduplicated=True)
    assert utt_id == "u1" and len(audio) == int(durations.sum()) * HOP
    loss = generator.duration_loss(torch.tensor([[1, 1, 1, 2, 2, 7]]))
    assert torch.isfinite(loss) and loss.requires_grad


def test_removing_weight_norm_keeps_the_output():
    generator = CodeHiFiGANGenerator(tiny_config()).eval()
    units = torch.randint(0, 20, (1, 9))
    with torch.no_grad():
        before = generator(units)
        after = generator.remove_weight_norm()(units)
    assert not any("parametrizations" in key for key in generator.state_dict())
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-5)


def test_batched_synthesis_cuts_each_utterance_to_its_length():
    generator = CodeHiFiGANGenerator(tiny_config()).eval()
    utterances = {"a": torch.randint(0, 20, (12,)), "b": torch.randint(0, 20, (5,)), "c": torch.randint(0, 20, (12,))}
    batched = dict(synthesize(generator, utterances, batch_size=3))
    single = dict(synthesize(generator, {"a": utterances["a"]}, batch_size=1))
    assert {k: len(v) for k, v in batched.items()} == {"a": 12 * HOP, "b": 5 * HOP, "c": 12 * HOP}
    torch.testing.assert_close(torch.from_numpy(batched["a"]), torch.from_numpy(single["a"]), rtol=1e-4, atol=1e-5)


def test_batched_synthesis_equals_one_at_a_time():
    """An utterance's waveform does not depend on what it was batched with (1e-6)."""
    torch.manual_seed(0)
    generator = CodeHiFiGANGenerator(tiny_config()).eval()
    lengths = [12, 5, 12, 9, 5, 30, 12, 12]
    utterances = {f"u{i}": torch.randint(0, 20, (n,)) for i, n in enumerate(lengths)}
    shapes = []
    hook = generator.register_forward_hook(lambda module, args, output: shapes.append(tuple(args[0].shape)))
    batched = dict(synthesize(generator, utterances, batch_size=3))
    hook.remove()
    assert sorted(shapes) == sorted([(1, 30), (3, 12), (1, 12), (1, 9), (2, 5)])  # equal lengths still batch
    for utt_id, units in utterances.items():
        (_, single), = synthesize(generator, {utt_id: units}, batch_size=1)
        assert batched[utt_id].shape == single.shape == (len(units) * HOP,)
        np.testing.assert_allclose(batched[utt_id], single, rtol=0, atol=1e-6, err_msg=utt_id)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(upsample_rates=[5, 4, 4, 2, 1], upsample_kernel_sizes=[11, 8, 8, 4, 1]), "code_hop_size 320"),
        (dict(upsample_kernel_sizes=[11, 8, 8, 4]), "differ in length"),
        (dict(resblock="3"), "resblock"),
        (dict(upsample_initial_channel=48), "upsample_initial_channel 48 must be a multiple of 32"),
        (dict(segment_size=1000), "segment_size 1000"),
        (dict(dur_predictor_params={"encoder_embed_dim": 8}), "dur_predictor_params: missing"),
    ],
)
def test_bad_configs_name_the_key(overrides, message):
    with pytest.raises(VocoderConfigError, match=message):
        tiny_config(**overrides)


def test_yaml_configs_reject_unknown_keys(tmp_path, repo):
    for name in ("tiny.yaml", "hifigan_unit_200.yaml"):
        VocoderConfig.from_file(repo / "conf" / "vocoder" / name)
    bad = tmp_path / "bad.yaml"
    bad.write_text("upsample_initial_chanel: 64\n")
    with pytest.raises(VocoderConfigError, match=r"unknown vocoder config keys \['upsample_initial_chanel'\]"):
        VocoderConfig.from_file(bad)
