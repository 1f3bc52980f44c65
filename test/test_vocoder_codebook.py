"""A vocoder belongs to one k-means codebook: another K, or another recorded k-means model, is
refused naming both files; published vocoders without a record get the K check only."""

from __future__ import annotations

import json

import joblib
import numpy as np
import pytest
from sklearn.cluster import MiniBatchKMeans

from sofa_speechlm.bin import train_vocoder
from sofa_speechlm.speech.kmeans import save_centres
from sofa_speechlm.vocoder import CodeHiFiGANGenerator, load_vocoder
from sofa_speechlm.vocoder.codebook import CODEBOOK_FILE, CodebookMismatch, file_md5
from vocoder_testutils import tiny_config, write_published_checkpoint


def kmeans_file(path, k, seed=0):
    save_centres(path, np.random.default_rng(seed).standard_normal((k, 4)).astype(np.float32))
    return path


def published_vocoder(directory, k):
    return write_published_checkpoint(CodeHiFiGANGenerator(tiny_config(num_embeddings=k)), directory)


def test_vocoder_of_another_k_is_refused_naming_both_files(tmp_path, caplog):
    checkpoint = published_vocoder(tmp_path / "published", 20)
    km = kmeans_file(tmp_path / "km.npy", 8)
    status = train_vocoder.main(["--output_dir", str(tmp_path / "out"), "--vocoder_file", str(checkpoint), "--kmeans_file", str(km)])
    assert status == 1
    assert f"the vocoder {checkpoint} has a codebook of 20 units, but the k-means model {km} has K=8 clusters" in caplog.text
    assert not (tmp_path / "out" / CODEBOOK_FILE).exists()


def test_imported_vocoder_records_its_kmeans_and_another_codebook_of_the_same_k_is_refused(tmp_path, caplog):
    checkpoint = published_vocoder(tmp_path / "published", 8)
    km, other = kmeans_file(tmp_path / "km.npy", 8), kmeans_file(tmp_path / "other.npy", 8, seed=1)
    assert train_vocoder.main(["--output_dir", str(tmp_path / "a"), "--vocoder_file", str(checkpoint), "--kmeans_file", str(km)]) == 0
    record = json.loads((tmp_path / "a" / CODEBOOK_FILE).read_text())
    assert record == {"kmeans_file": str(km), "md5": file_md5(km), "nclusters": 8}
    assert load_vocoder(tmp_path / "a", kmeans_file=km).num_embeddings == 8
    with pytest.raises(CodebookMismatch, match=f"trained with the k-means model {km} .*not with {other}"):
        load_vocoder(tmp_path / "a", kmeans_file=other)
    # importing that vocoder (its kmeans.json beside it) with the other k-means model fails too
    status = train_vocoder.main(["--output_dir", str(tmp_path / "b"), "--vocoder_file", str(tmp_path / "a" / "generator.pth"), "--kmeans_file", str(other)])
    assert status == 1 and f"the vocoder {tmp_path / 'a' / 'generator.pth'} was trained with the k-means model {km}" in caplog.text


def test_published_vocoder_without_record_gets_the_k_check_only(tmp_path):
    checkpoint = published_vocoder(tmp_path / "published", 8)
    checkpoint = checkpoint.rename(checkpoint.parent / "generator.pth")  # a released vocoder put in place as a vocoder dir
    points = np.random.default_rng(0).standard_normal((200, 4)).astype(np.float32)
    joblib.dump(MiniBatchKMeans(n_clusters=8, n_init=1, random_state=0, batch_size=64).fit(points), tmp_path / "km.bin")
    assert load_vocoder(checkpoint.parent).num_embeddings == 8  # no k-means given: loads as before
    assert load_vocoder(checkpoint.parent, kmeans_file=tmp_path / "km.bin").num_embeddings == 8  # fairseq km.bin
    with pytest.raises(CodebookMismatch, match=r"published/config.json has a codebook of 8 units, but the k-means model .*km5.npy has K=5"):
        load_vocoder(checkpoint.parent, kmeans_file=kmeans_file(tmp_path / "km5.npy", 5))
