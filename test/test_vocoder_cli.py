"""The vocoder command lines: vocode (units file -> wavs + wav.scp) and train_vocoder (train, import)."""

import logging

import pytest
import soundfile
import torch

from sofa_speechlm.bin import train_vocoder, vocode
from sofa_speechlm.data import read_table
from sofa_speechlm.vocoder import CodeHiFiGANGenerator, load_generator, save_published
from vocoder_testutils import HOP, make_unit_dir, tiny_config, write_published_checkpoint


def test_vocode_writes_one_wav_per_utterance_with_320_samples_per_unit(tmp_path):
    checkpoint = write_published_checkpoint(CodeHiFiGANGenerator(tiny_config()), tmp_path / "vocoder")
    (tmp_path / "units").write_text("b 1 2 3\na 4 5 6 7 8 9 10\nc 0\n")
    outdir = tmp_path / "out"
    assert vocode.main(["--vocoder_file", str(checkpoint), "--units", str(tmp_path / "units"), "--output_dir", str(outdir), "--batch_size", "2", "--device", "cpu"]) == 0
    wav_scp = read_table(outdir / "wav.scp")
    assert list(wav_scp) == ["a", "b", "c"]
    for utt_id, frames in {"a": 7, "b": 3, "c": 1}.items():
        audio, rate = soundfile.read(wav_scp[utt_id])
        assert rate == 16000 and len(audio) == frames * HOP
    assert float((outdir / "rtf").read_text()) > 0


def test_vocode_rejects_units_outside_the_table(tmp_path, caplog):
    checkpoint = write_published_checkpoint(CodeHiFiGANGenerator(tiny_config()), tmp_path / "vocoder")
    (tmp_path / "units").write_text("good 1 2\nbad 3 25\n")
    with caplog.at_level(logging.ERROR):
        rc = vocode.main(["--vocoder_file", str(checkpoint), "--units", str(tmp_path / "units"), "--output_dir", str(tmp_path / "out"), "--device", "cpu"])
    assert rc == 1 and "utterance bad: unit id 25" in caplog.text



@pytest.mark.parametrize("step, argv, message", [
    (vocode, ["--vocoder_dir", "d", "--vocoder_file", "f"], "not allowed with argument"),
    (vocode, [], "one of the arguments --vocoder_dir --vocoder_file is required"),
    (vocode, ["--vocoder_dir", "d", "--vocoder_config", "c.json"], "--vocoder_config is the config of --vocoder_file"),
    (train_vocoder, ["--vocoder_config", "c.json"], "--vocoder_config is the config of --vocoder_file"),
])
def test_a_vocoder_is_a_dir_or_a_file_with_its_config(step, argv, message, tmp_path, capsys):
    common = ["--units", "units"] if step is vocode else []
    with pytest.raises(SystemExit):
        step.main(argv + common + ["--output_dir", str(tmp_path / "out")])
    assert message in capsys.readouterr().err

def test_train_vocoder_trains_then_resumes(tmp_path, repo):
    data = make_unit_dir(tmp_path / "data", frames=[6, 8])
    config = tmp_path / "tiny.yaml"
    config.write_text(
        "upsample_initial_channel: 32\nembedding_dim: 8\nnum_embeddings: 20\nresblock_kernel_sizes: [3]\n"
        "resblock_dilation_sizes: [[1, 3, 5]]\nsegment_size: 1280\nbatch_size: 2\ndiscriminator_scale: 0.03125\n"
        "max_steps: 1\nlog_interval: 1\n"
    )
    outdir = tmp_path / "exp"
    args = ["--config", str(config), "--output_dir", str(outdir), "--data_dir", str(data), "--device", "cpu"]
    assert train_vocoder.main(args + ["--num_embeddings", "30"]) == 0
    assert load_generator(outdir / "generator.pth").config.num_embeddings == 30
    assert train_vocoder.main(args + ["--num_embeddings", "30", "--max_steps", "2"]) == 0
    assert torch.load(outdir / "checkpoint.pth")["step"] == 2
    assert train_vocoder.main(args + ["--num_embeddings", "40", "--max_steps", "3"]) == 1  # other generator: refused


def test_train_vocoder_imports_a_published_checkpoint(tmp_path, caplog):
    generator = CodeHiFiGANGenerator(tiny_config())
    checkpoint = write_published_checkpoint(generator, tmp_path / "released")
    outdir = tmp_path / "exp"
    assert train_vocoder.main(["--output_dir", str(outdir), "--vocoder_file", str(checkpoint)]) == 0
    units = torch.randint(0, 20, (1, 5))
    with torch.no_grad():
        assert torch.equal(load_generator(outdir / "generator.pth")(units), generator.eval()(units))
    (tmp_path / "released" / "config.json").write_text('{"embedding_dim": 16, "num_embeddings": 20, "upsample_initial_channel": 32}')
    with caplog.at_level(logging.ERROR):
        assert train_vocoder.main(["--output_dir", str(outdir), "--vocoder_file", str(checkpoint)]) == 1
    assert "does not match its vocoder config" in caplog.text and "dict.weight" in caplog.text


def test_vocode_expands_deduplicated_units_by_given_durations(tmp_path):
    generator = CodeHiFiGANGenerator(tiny_config())
    checkpoint = write_published_checkpoint(generator, tmp_path / "vocoder")
    (tmp_path / "units_dedup").write_text("a 4 7 4\n")
    (tmp_path / "units_dur").write_text("a 2 1 3\n")
    common = ["--vocoder_file", str(checkpoint), "--units", str(tmp_path / "units_dedup"), "--device", "cpu"]
    assert vocode.main(common + ["--output_dir", str(tmp_path / "out"), "--durations", str(tmp_path / "units_dur")]) == 0
    audio, _ = soundfile.read(tmp_path / "out" / "wav" / "a.wav", dtype="float32")
    with torch.no_grad():
        expected = generator.eval().remove_weight_norm()(torch.tensor([[4, 4, 7, 4, 4, 4]]))[0].numpy()
    assert len(audio) == 6 * HOP
    assert abs(audio - expected).max() < 2e-4  # 16-bit PCM
    (tmp_path / "units_dur").write_text("a 2 1\n")
    assert vocode.main(common + ["--output_dir", str(tmp_path / "bad"), "--durations", str(tmp_path / "units_dur")]) == 1


def test_vocode_multispeaker_takes_speakers_from_utt2spk(tmp_path, caplog):
    generator = CodeHiFiGANGenerator(tiny_config(multispkr=True, num_speakers=2, speakers=["anna", "bob"]))
    checkpoint = tmp_path / "vocoder" / "generator.pth"
    save_published(generator, checkpoint)  # its config.json keeps the speaker names
    (tmp_path / "units").write_text("u1 1 2 3\nu2 1 2 3\n")
    (tmp_path / "utt2spk").write_text("u1 anna\nu2 bob\n")
    common = ["--vocoder_file", str(checkpoint), "--units", str(tmp_path / "units"), "--device", "cpu"]
    assert vocode.main(common + ["--output_dir", str(tmp_path / "out"), "--utt2spk", str(tmp_path / "utt2spk")]) == 0
    first, _ = soundfile.read(tmp_path / "out" / "wav" / "u1.wav")
    second, _ = soundfile.read(tmp_path / "out" / "wav" / "u2.wav")
    assert len(first) == len(second) == 3 * HOP and abs(first - second).max() > 0
    (tmp_path / "utt2spk").write_text("u1 anna\nu2 carol\n")
    with caplog.at_level(logging.ERROR):
        assert vocode.main(common + ["--output_dir", str(tmp_path / "bad"), "--utt2spk", str(tmp_path / "utt2spk")]) == 1
    assert "utterance u2 has speaker carol, unknown to the vocoder" in caplog.text
    assert vocode.main(common + ["--output_dir", str(tmp_path / "bad"), "--speaker_id", "2"]) == 1
    assert "--speaker_id 2: the vocoder has 2 speakers" in caplog.text
