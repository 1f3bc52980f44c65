"""k-means: fairseq settings, labels stable across save/load, fairseq km.bin, units files."""

from __future__ import annotations

import tracemalloc

import joblib
import kaldiio
import numpy as np
import pytest
from sklearn.cluster import MiniBatchKMeans

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


def test_sample_features_keeps_every_frame_in_id_order_when_they_fit(tmp_path):
    features = {f"u{i}": np.full((10 + i, 3), i, dtype=np.float32) for i in range(10)}
    write_scp(tmp_path / "a.scp", {key: value for key, value in features.items() if key in ("u1", "u7", "u3")})
    write_scp(tmp_path / "b.scp", {key: value for key, value in features.items() if key not in ("u1", "u7", "u3")})
    sampled = sample_features([tmp_path / "a.scp", tmp_path / "b.scp"], max_frames=145, seed=0)
    np.testing.assert_array_equal(sampled, np.concatenate([features[key] for key in sorted(features)]))


def test_sample_features_is_a_uniform_bounded_sample(tmp_path):
    features = {f"u{i:02d}": np.full((100, 2), i, dtype=np.float32) for i in range(20)}
    write_scp(tmp_path / "feats.scp", features)
    sampled = sample_features([tmp_path / "feats.scp"], max_frames=500, seed=1)
    assert sampled.shape == (500, 2)
    np.testing.assert_array_equal(sampled, sample_features([tmp_path / "feats.scp"], max_frames=500, seed=1))
    per_utterance = np.bincount(sampled[:, 0].astype(int), minlength=20)
    assert per_utterance.min() > 0 and per_utterance[10:].sum() > 150  # late utterances are sampled too (expected 250)
    with pytest.raises(ValueError, match="--max_frames 0"):
        sample_features([tmp_path / "feats.scp"], max_frames=0, seed=0)


def test_kmeans_sample_memory_is_bounded_by_max_frames_not_the_dump(tmp_path):
    """30 utterances of 2000 x 64 frames in 3 scp shards (15 MB in all): a 2000-frame sample holds far less."""
    shard = np.random.default_rng(0).standard_normal((2000, 64)).astype(np.float32)
    for index in range(3):
        write_scp(tmp_path / f"feats.{index}.scp", {f"u{index}-{i:02d}": shard + i for i in range(10)})
    scps = [tmp_path / f"feats.{index}.scp" for index in range(3)]
    tracemalloc.start()
    sampled = sample_features(scps, max_frames=2000, seed=0)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert sampled.shape == (2000, 64)
    assert peak < 4 * shard.nbytes, f"peak {peak} bytes for shards of {shard.nbytes} bytes"


def test_learn_kmeans_cli_finds_the_clusters_of_dumped_features(tmp_path):
    data = tmp_path / "data"
    wavs = make_speech_dir(data, count=4)
    ids = sorted(wavs)
    points, _ = blobs(per_blob=40, dim=4, count=3)
    features = {utt_id: points[i * 40 : (i + 1) * 40] for i, utt_id in enumerate(ids[:3])}  # ids[3]: no features
    write_scp(tmp_path / "feats.scp", features)
    learn_kmeans_cli.main(["--feats_scp", str(tmp_path / "feats.scp"), "--output_file", str(tmp_path / "km.npy"), "--nclusters", "3", "--n_init", "2"])
    quantizer = KmeansQuantizer.load(tmp_path / "km.npy")
    # each blob is one cluster
    assert sorted(quantizer(points[::40]).tolist()) == [0, 1, 2]
    for matrix in features.values():
        assert len(set(quantizer(matrix).tolist())) == 1
    with pytest.raises(SystemExit, match="learn_kmeans: error: --nclusters 500 is larger than the 120 training frames"):
        learn_kmeans_cli.main(["--feats_scp", str(tmp_path / "feats.scp"), "--output_file", str(tmp_path / "k2.npy"), "--nclusters", "500"])


def test_deduplicate_keeps_durations():
    units = [5, 5, 5, 1, 1, 7, 5, 5]
    assert deduplicate(units) == ([5, 1, 7, 5], [3, 2, 1, 2])
    assert expand(*deduplicate(units)) == units
    assert deduplicate([]) == ([], [])


def test_data_dir_without_units_is_a_clear_error(tmp_path):
    make_speech_dir(tmp_path / "data", count=1)
    with pytest.raises(DataDirError, match=r"data: no units file; run stage 2 \(speech units\) first"):
        read_units(tmp_path / "data")
