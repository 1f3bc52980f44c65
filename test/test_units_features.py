"""Feature dumping and on-the-fly units: any --nj gives the same output; unusable audio is listed, not fatal."""

from __future__ import annotations

import kaldiio
import numpy as np
import pytest
import soundfile

from sofa_speechlm.bin import dump_features as dump_features_cli
from sofa_speechlm.bin import dump_units as dump_units_cli
from sofa_speechlm.data import read_table, write_table
from sofa_speechlm.speech.features import job_share
from sofa_speechlm.speech.kmeans import KmeansQuantizer, save_centres
from sofa_speechlm.speech.mfcc import MfccFeatureReader
from sofa_speechlm.speech.units import expand
from units_testutils import make_speech_dir, tiny_hubert, tone


def dump(data_dir, out_dir, nj, *options):
    for job in range(1, nj + 1):
        dump_features_cli.main(["--data_dir", str(data_dir), "--output_dir", str(out_dir), "--job", str(job), "--nj", str(nj), *options])
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
    soundfile.write(wavs[ids[4]], tone(0.1, 300)[:100], 16000)  # shorter than a frame
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
        dump_features_cli.main(["--data_dir", str(tmp_path / "data"), "--output_dir", str(tmp_path / "f"), "--hubert_ckpt", str(tmp_path / "bad.pt")])


def test_nan_inf_and_silent_audio_are_listed_and_left_out(tmp_path):
    data = tmp_path / "data"
    wavs = make_speech_dir(data, count=5)
    ids = sorted(wavs)
    good = tone(0.5, 300)
    nan, inf = good.copy(), good.copy()
    nan[100:110] = np.nan
    inf[5] = np.inf
    for utt_id, waveform in ((ids[1], nan), (ids[2], inf), (ids[3], np.zeros(8000, dtype=np.float32))):
        soundfile.write(wavs[utt_id], waveform, 16000, subtype="FLOAT")  # float wavs keep NaN and Inf
    features = dump(data, tmp_path / "feats", 1)
    assert sorted(features) == [ids[0], ids[4]]
    bad = dict(line.split(" ", 1) for line in (tmp_path / "feats" / "bad_utts.1.txt").read_text().splitlines())
    assert bad[ids[1]] == "10 NaN or Inf samples of 8000" and bad[ids[2]] == "1 NaN or Inf samples of 8000"
    assert bad[ids[3]] == "all 8000 samples are zero"


def test_multichannel_audio_is_mixed_down_with_a_note(tmp_path, caplog):
    data = tmp_path / "data"
    wavs = make_speech_dir(data, count=2)
    left, right = tone(0.5, 300), tone(0.5, 500, seed=1)
    soundfile.write(wavs["spk1-utt001"], np.stack([left, right], axis=1), 16000, subtype="FLOAT")
    with caplog.at_level("WARNING"):
        features = dump(data, tmp_path / "feats", 1)
    assert "2 channels mixed down to mono" in caplog.text and "spk1-utt001" in caplog.text
    np.testing.assert_allclose(features["spk1-utt001"], MfccFeatureReader().extract((left + right) / 2), rtol=1e-4, atol=1e-3)


def test_percent_and_max_frames_choose_the_same_utterances_in_every_job(tmp_path):
    wavs = make_speech_dir(tmp_path / "data", count=10, seconds=0.5)  # 0.5 s + 0.1 s per index: 24..69 frames
    half = dump(tmp_path / "data", tmp_path / "half", 2, "--percent", "0.5", "--seed", "3")
    assert len(half) == 5 and set(half) < set(wavs)
    assert sorted(dump(tmp_path / "data", tmp_path / "again", 1, "--percent", "0.5", "--seed", "3")) == sorted(half)
    bounded = dump(tmp_path / "data", tmp_path / "bounded", 2, "--max_frames", "100")
    frames = [len(matrix) for matrix in bounded.values()]
    assert 100 <= sum(frames) < 100 + 2 * max(frames) and len(bounded) < 10  # each job stops past its 50 frames
    with pytest.raises(SystemExit, match="--percent 0.0: expected a fraction"):
        dump(tmp_path / "data", tmp_path / "none", 1, "--percent", "0")


def test_units_labelled_on_the_fly_equal_labels_of_dumped_features(tmp_path):
    wavs = make_speech_dir(tmp_path / "data", count=5)
    soundfile.write(wavs["spk0-utt002"], np.zeros(4000, dtype=np.float32), 16000)
    features = dump(tmp_path / "data", tmp_path / "feats", 1)
    centres = np.concatenate(list(features.values()))[::7][:6]
    save_centres(tmp_path / "km.npy", centres)
    for job in (1, 2):
        dump_units_cli.main(["--data_dir", str(tmp_path / "data"), "--output_dir", str(tmp_path / "units"),
                             "--kmeans_file", str(tmp_path / "km.npy"), "--job", str(job), "--nj", "2"])
    units = {**read_table(tmp_path / "units" / "units.1"), **read_table(tmp_path / "units" / "units.2")}
    quantizer = KmeansQuantizer(centres)
    assert sorted(units) == sorted(features)
    for utt_id, matrix in features.items():
        assert units[utt_id] == " ".join(map(str, quantizer(matrix).tolist()))
    dedup = {**read_table(tmp_path / "units" / "units_dedup.1"), **read_table(tmp_path / "units" / "units_dedup.2")}
    durations = {**read_table(tmp_path / "units" / "units_dur.1"), **read_table(tmp_path / "units" / "units_dur.2")}
    for utt_id in units:
        assert expand(map(int, dedup[utt_id].split()), map(int, durations[utt_id].split())) == list(map(int, units[utt_id].split()))
    bad = "".join((tmp_path / "units" / f"bad_utts.{job}.txt").read_text() for job in (1, 2))
    assert bad == "spk0-utt002 all 4000 samples are zero\n"


def test_kmeans_of_other_features_is_a_clear_error(tmp_path):
    make_speech_dir(tmp_path / "data", count=1)
    save_centres(tmp_path / "km.npy", np.zeros((4, 768), dtype=np.float32))
    with pytest.raises(SystemExit, match=r"dump_units: error: --kmeans_file .*km.npy has 768-dim centres, but the features \(MFCC\) have 39 dims"):
        dump_units_cli.main(["--data_dir", str(tmp_path / "data"), "--output_dir", str(tmp_path / "u"), "--kmeans_file", str(tmp_path / "km.npy")])
