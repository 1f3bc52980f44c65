"""k-means: fairseq settings, labels stable across save/load, fairseq km.bin, units files."""

from __future__ import annotations

import joblib
import kaldiio
import numpy as np
import pytest
from sklearn.cluster import MiniBatchKMeans

from sofa_speechlm.bin import dump_units as dump_units_cli
from sofa_speechlm.bin import learn_kmeans as learn_kmeans_cli
from sofa_speechlm.data import DataDir, DataDirError
from sofa_speechlm.speech.kmeans import KmeansQuantizer, learn_kmeans, load_centres, sample_features, save_centres
from sofa_speechlm.speech.units import deduplicate, expand, read_units
from units_testutils import make_speech_dir


def blobs(seed=0, per_blob=300, dim=8, count=5):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=10.0, size=(count, dim))
    points = np.concatenate([centre + rng.normal(size=(per_blob, dim)) for centre in centres])
    return points.astype(np.float32), centres


def nearest(points, centres):
    """Reference labels in float64."""
    distances = ((points[:, None, :].astype(np.float64) - centres[None].astype(np.float64)) ** 2).sum(-1)
    return distances.argmin(1)


def test_kmeans_finds_the_clusters_and_labels_survive_save_load(tmp_path):
    points, true_centres = blobs()
    centres = learn_kmeans(points, 5, seed=1, n_init=3)
    assert centres.shape == (5, 8) and centres.dtype == np.float32
    # every true centre has a learned centre close by
    assert np.sort(np.linalg.norm(true_centres[:, None] - centres[None], axis=-1).min(1))[-1] < 0.5
    save_centres(tmp_path / "km.npy", centres)
    labels = KmeansQuantizer(centres)(points)
    reloaded = KmeansQuantizer.load(tmp_path / "km.npy")(points)
    np.testing.assert_array_equal(labels, reloaded)
    np.testing.assert_array_equal(labels, nearest(points, centres))
    assert len(set(labels.tolist())) == 5


def test_fairseq_km_bin_loads_and_labels_like_sklearn(tmp_path):
    points, _ = blobs(seed=3)
    model = MiniBatchKMeans(n_clusters=7, n_init=2, random_state=0, batch_size=256).fit(points)
    joblib.dump(model, tmp_path / "km.bin")
    np.testing.assert_array_equal(load_centres(tmp_path / "km.bin"), model.cluster_centers_.astype(np.float32))
    np.testing.assert_array_equal(KmeansQuantizer.load(tmp_path / "km.bin")(points), model.predict(points))


def test_k_larger_than_training_frames_is_refused():
    points, _ = blobs(per_blob=10)
    with pytest.raises(ValueError, match="--nclusters 200 is larger than the 50 training frames"):
        learn_kmeans(points, 200)


def test_bad_kmeans_files_are_refused(tmp_path):
    (tmp_path / "junk.bin").write_bytes(b"junk")
    with pytest.raises(ValueError, match="junk.bin: neither a .npy of cluster centres nor a joblib-pickled"):
        load_centres(tmp_path / "junk.bin")
    with pytest.raises(FileNotFoundError, match="k-means model not found"):
        load_centres(tmp_path / "none.npy")
    with pytest.raises(ValueError, match="do not match 8-dim centres"):
        KmeansQuantizer(np.zeros((3, 8), dtype=np.float32))(np.zeros((4, 5), dtype=np.float32))


def write_scp(path, features):
    with kaldiio.WriteHelper(f"ark,scp:{path.with_suffix('.ark')},{path}") as writer:
        for key, matrix in features.items():
            writer(key, matrix)


def test_sample_features_takes_a_fraction_of_utterances(tmp_path):
    features = {f"u{i}": np.full((10 + i, 3), i, dtype=np.float32) for i in range(10)}
    write_scp(tmp_path / "feats.scp", features)
    sampled = sample_features([tmp_path / "feats.scp"], 0.3, seed=0)
    chosen = sorted(set(sampled[:, 0].astype(int).tolist()))
    assert len(chosen) == 3 and len(sampled) == sum(10 + i for i in chosen)
    np.testing.assert_array_equal(sampled, sample_features([tmp_path / "feats.scp"], 0.3, seed=0))
    with pytest.raises(ValueError, match="--percent 1.5"):
        sample_features([tmp_path / "feats.scp"], 1.5, seed=0)


def test_learn_and_dump_units_clis_write_units_into_the_data_dir(tmp_path, caplog):
    data = tmp_path / "data"
    wavs = make_speech_dir(data, count=4)
    ids = sorted(wavs)
    points, _ = blobs(per_blob=40, dim=4, count=3)
    features = {utt_id: points[i * 40 : (i + 1) * 40] for i, utt_id in enumerate(ids[:3])}  # ids[3]: no features
    write_scp(tmp_path / "feats.scp", features)
    learn_kmeans_cli.main(["--feats_scp", str(tmp_path / "feats.scp"), "--out", str(tmp_path / "km.npy"), "--nclusters", "3", "--n_init", "2"])
    with caplog.at_level("INFO"):
        dump_units_cli.main(["--feats_scp", str(tmp_path / "feats.scp"), "--km", str(tmp_path / "km.npy"), "--data_dir", str(data), "--dedup"])
    assert "1 without features left out" in caplog.text
    units = read_units(data)
    assert sorted(units) == ids[:3] and DataDir(data).units is not None
    quantizer = KmeansQuantizer.load(tmp_path / "km.npy")
    for utt_id, matrix in features.items():
        assert units[utt_id] == quantizer(matrix).tolist()
        # each blob is one cluster: 40 frames of one unit
        assert len(set(units[utt_id])) == 1 and len(units[utt_id]) == 40
    dedup, durations = read_units(data, "units_dedup"), read_units(data, "units_dur")
    for utt_id in units:
        assert expand(dedup[utt_id], durations[utt_id]) == units[utt_id]
    with pytest.raises(SystemExit, match="learn_kmeans: error: --nclusters 500 is larger than the 120 training frames"):
        learn_kmeans_cli.main(["--feats_scp", str(tmp_path / "feats.scp"), "--out", str(tmp_path / "k2.npy"), "--nclusters", "500"])


def test_deduplicate_keeps_durations():
    units = [5, 5, 5, 1, 1, 7, 5, 5]
    assert deduplicate(units) == ([5, 1, 7, 5], [3, 2, 1, 2])
    assert expand(*deduplicate(units)) == units
    assert deduplicate([]) == ([], [])


def test_data_dir_without_units_is_a_clear_error(tmp_path):
    make_speech_dir(tmp_path / "data", count=1)
    with pytest.raises(DataDirError, match=r"data: no units file; run stage 2 \(speech units\) first"):
        read_units(tmp_path / "data")
