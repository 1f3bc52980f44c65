"""Feature dumping: any --nj gives the same features; unusable audio is listed, not fatal."""

from __future__ import annotations

import kaldiio
import numpy as np
import pytest
import soundfile

from sofa_speechlm.bin import dump_features as dump_features_cli
from sofa_speechlm.data import write_table
from sofa_speechlm.speech.features import job_share
from sofa_speechlm.speech.mfcc import MfccFeatureReader
from units_testutils import make_speech_dir, tiny_hubert, tone


def dump(data_dir, out_dir, nj, *options):
    for job in range(1, nj + 1):
        dump_features_cli.main(["--data_dir", str(data_dir), "--out_dir", str(out_dir), "--job", str(job), "--nj", str(nj), *options])
    features = {}
    for job in range(1, nj + 1):
        features.update(kaldiio.load_scp(str(out_dir / f"feats.{job}.scp")))
    return {utt_id: np.asarray(matrix) for utt_id, matrix in features.items()}


@pytest.mark.parametrize("feature", ["mfcc", "hubert"])
def test_three_jobs_give_the_features_of_one(tmp_path, feature):
    wavs = make_speech_dir(tmp_path / "data", count=7)
    options = []
    if feature == "hubert":
        tiny_hubert().save_pretrained(tmp_path / "hf")
        options = ["--hubert_ckpt", str(tmp_path / "hf"), "--layer", "6"]
    one = dump(tmp_path / "data", tmp_path / "nj1", 1, *options)
    three = dump(tmp_path / "data", tmp_path / "nj3", 3, *options)
    assert sorted(one) == sorted(three) == sorted(wavs)
    for utt_id in one:
        np.testing.assert_array_equal(one[utt_id], three[utt_id])
    # each job did a share: three non-empty scps
    assert all((tmp_path / "nj3" / f"feats.{job}.scp").read_text().strip() for job in (1, 2, 3))
    dim = 32 if feature == "hubert" else 39
    first = sorted(wavs)[0]
    assert one[first].shape == (1 + (len(soundfile.read(wavs[first])[0]) - 400) // 320, dim)


def test_mfcc_frames_match_hubert_frames():
    reader = MfccFeatureReader()
    for samples in (400, 719, 720, 16000, 16321):
        assert reader.extract(tone(samples / 16000, 300)[:samples]).shape == (1 + (samples - 400) // 320, 39)


def test_job_share_covers_every_item_once():
    items = [f"u{i}" for i in range(10)]
    shares = [job_share(items, job, 3) for job in (1, 2, 3)]
    assert sum(shares, []) == items
    with pytest.raises(ValueError, match="--job 4 --nj 3"):
        job_share(items, 4, 3)


def test_unusable_audio_is_listed_by_utterance_and_left_out(tmp_path, caplog):
    data = tmp_path / "data"
    wavs = make_speech_dir(data, count=6)
    ids = sorted(wavs)
    wavs[ids[1]].write_bytes(b"RIFF garbage, not a wav")  # corrupt
    soundfile.write(wavs[ids[3]], np.zeros(0, dtype=np.float32), 16000)  # empty
    soundfile.write(wavs[ids[4]], np.zeros(100, dtype=np.float32), 16000)  # shorter than a frame
    scp = {utt_id: str(path) for utt_id, path in wavs.items()}
    scp[ids[5]] = str(tmp_path / "missing.wav")
    write_table(data / "wav.scp", scp)
    with caplog.at_level("INFO"):
        features = dump(data, tmp_path / "feats", 2)
    assert sorted(features) == [ids[0], ids[2]]
    bad = {}
    for job in (1, 2):
        for line in (tmp_path / "feats" / f"bad_utts.{job}.txt").read_text().splitlines():
            utt_id, reason = line.split(" ", 1)
            bad[utt_id] = reason
    assert sorted(bad) == [ids[1], ids[3], ids[4], ids[5]]
    assert "unreadable audio" in bad[ids[1]] and str(wavs[ids[1]]) in bad[ids[1]]
    assert "empty audio" in bad[ids[3]]
    assert "shorter than one MFCC frame" in bad[ids[4]]
    assert "not found" in bad[ids[5]]
    assert "1 left out" in caplog.text and "3 left out" in caplog.text  # per job


def test_resampled_audio_gives_16khz_frames(tmp_path):
    wavs = make_speech_dir(tmp_path / "data", count=2, fs=8000)
    features = dump(tmp_path / "data", tmp_path / "feats", 1)
    for utt_id, wav in wavs.items():
        samples_16k = 2 * len(soundfile.read(wav)[0])
        assert features[utt_id].shape[0] == 1 + (samples_16k - 400) // 320


def test_bad_checkpoint_is_a_clear_cli_error(tmp_path):
    make_speech_dir(tmp_path / "data", count=1)
    (tmp_path / "bad.pt").write_bytes(b"junk")
    with pytest.raises(SystemExit, match="dump_features: error: .*bad.pt: not a readable torch checkpoint"):
        dump_features_cli.main(["--data_dir", str(tmp_path / "data"), "--out_dir", str(tmp_path / "f"), "--hubert_ckpt", str(tmp_path / "bad.pt")])
