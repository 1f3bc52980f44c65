"""Vocoder GAN training on CPU: a step updates the generator, checkpoints resume, data is checked."""

import pytest
import torch

from sofa_speechlm.data import DataDirError
from sofa_speechlm.vocoder import VocoderConfigError, load_generator
from sofa_speechlm.vocoder.dataset import UnitWaveformDataset
from sofa_speechlm.vocoder.trainer import VocoderTrainer
from vocoder_testutils import HOP, make_unit_dir, tiny_config


@pytest.fixture
def unit_dir(tmp_path):
    return make_unit_dir(tmp_path / "data", frames=[3, 9, 12])


def test_training_step_gives_finite_losses_and_changes_the_generator(tmp_path, unit_dir):
    torch.manual_seed(0)
    trainer = VocoderTrainer(tiny_config(), tmp_path / "exp")
    dataset = UnitWaveformDataset([unit_dir], trainer.config)
    wav, units, speakers = (torch.stack([dataset[i][0] for i in (1, 2)]), torch.stack([dataset[i][1] for i in (1, 2)]), torch.tensor([0, 0]))
    assert wav.shape == (2, 4 * HOP) and units.shape == (2, 4)
    before = {k: v.clone() for k, v in trainer.generator.state_dict().items()}
    disc_before = {k: v.clone() for k, v in trainer.mpd.state_dict().items()}
    losses = trainer.train_step(wav, units, speakers)
    assert set(losses) == {"generator", "discriminator", "mel_l1", "adversarial", "feature_matching"}
    assert all(torch.isfinite(torch.tensor(v)) for v in losses.values()), losses
    assert losses["mel_l1"] > 0 and trainer.step == 1
    changed = [k for k, v in trainer.generator.state_dict().items() if not torch.equal(v, before[k])]
    assert "conv_post.parametrizations.weight.original1" in changed and "dict.weight" in changed
    assert any(not torch.equal(v, disc_before[k]) for k, v in trainer.mpd.state_dict().items())


def test_duration_predictor_is_trained_with_the_generator(tmp_path, unit_dir):
    config = tiny_config(dur_predictor_params=dict(encoder_embed_dim=8, var_pred_hidden_dim=8, var_pred_kernel_size=3, var_pred_dropout=0.0))
    trainer = VocoderTrainer(config, tmp_path / "exp")
    before = trainer.generator.dur_predictor.proj.weight.clone()
    losses = trainer.train_step(torch.zeros(2, 4 * HOP), torch.tensor([[1, 1, 2, 3], [4, 4, 4, 4]]), torch.tensor([0, 0]))
    assert torch.isfinite(torch.tensor(losses["duration"]))
    assert not torch.equal(before, trainer.generator.dur_predictor.proj.weight)


def test_training_resumes_from_the_saved_step(tmp_path, unit_dir):
    torch.manual_seed(0)
    outdir = tmp_path / "exp"
    first = VocoderTrainer(tiny_config(max_steps=2), outdir)
    assert not first.resume()
    first.train([unit_dir])
    assert first.step == 2
    for name in ("checkpoint.pth", "generator.pth", "config.json", "loss.png"):
        assert (outdir / name).is_file(), name
    assert list((outdir / "tensorboard").glob("events.out.tfevents.*"))
    saved = {k: v.clone() for k, v in first.generator.state_dict().items()}

    second = VocoderTrainer(tiny_config(max_steps=3), outdir)
    assert second.resume()
    assert second.step == 2 and [h["step"] for h in second.history] == [1, 2]
    assert all(torch.equal(v, saved[k]) for k, v in second.generator.state_dict().items())
    assert second.optim_g.state_dict()["state"][0]["step"] == 2
    second.train([unit_dir])
    assert second.step == 3 and [h["step"] for h in second.history] == [1, 2, 3]
    assert torch.load(outdir / "checkpoint.pth")["step"] == 3
    exported = load_generator(outdir / "generator.pth")
    assert all(torch.equal(v, second.generator.state_dict()[k]) for k, v in exported.state_dict().items())


def test_resume_with_another_generator_config_is_refused(tmp_path, unit_dir):
    VocoderTrainer(tiny_config(max_steps=1), tmp_path / "exp").train([unit_dir])
    with pytest.raises(VocoderConfigError, match="embedding_dim"):
        VocoderTrainer(tiny_config(embedding_dim=16), tmp_path / "exp").resume()


def test_units_that_do_not_match_the_audio_name_the_utterance(tmp_path):
    data = make_unit_dir(tmp_path / "data", frames=[10, 10], units_frames=[10, 30])
    dataset = UnitWaveformDataset([data], tiny_config())
    assert len(dataset[0][1]) == 4
    with pytest.raises(DataDirError, match="utterance spk1-utt1 has 30 units but its audio holds 10 frames"):
        dataset[1]


def test_unit_ids_outside_the_table_name_the_utterance(tmp_path):
    data = make_unit_dir(tmp_path / "data", frames=[5, 5], num_embeddings=40)
    with pytest.raises(DataDirError, match=r"utterance spk\d-utt\d: unit id \d+ at position \d+ is outside"):
        UnitWaveformDataset([data], tiny_config())


def test_multispeaker_training_uses_the_speaker_list(tmp_path, unit_dir):
    config = tiny_config(multispkr=True, num_speakers=2, speakers=["spk0", "spk1"])
    dataset = UnitWaveformDataset([unit_dir], config)
    speakers = {item.utt_id: dataset[i][2] for i, item in enumerate(dataset.utterances)}
    assert speakers == {"spk0-utt0": 0, "spk1-utt1": 1, "spk0-utt2": 0}
    trainer = VocoderTrainer(config, tmp_path / "exp")
    losses = trainer.train_step(torch.stack([dataset[i][0] for i in (0, 1)]), torch.stack([dataset[i][1] for i in (0, 1)]), torch.tensor([0, 1]))
    assert torch.isfinite(torch.tensor(losses["generator"]))
