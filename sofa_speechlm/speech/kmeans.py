"""k-means quantisation of frame features into unit ids (fairseq simple_kmeans settings).

The learned model is stored as its cluster centres only (`.npy`, [K, dim] float32), which
load without unpickling sklearn objects; fairseq's published `km.bin` files (joblib-pickled
MiniBatchKMeans) load too, through their `cluster_centers_`.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

import kaldiio
import numpy as np
import torch

# fairseq examples/hubert/simple_kmeans/learn_kmeans.py defaults
FAIRSEQ_KMEANS_SETTINGS = dict(
    init="k-means++",
    max_iter=100,
    batch_size=10000,
    tol=0.0,
    max_no_improvement=100,
    n_init=20,
    reassignment_ratio=0.0,
)


def sample_features(feats_scps: list[str | Path], percent: float, seed: int) -> np.ndarray:
    """Frames of a random `percent` fraction of the utterances in the scp files, stacked."""
    if not 0.0 < percent <= 1.0:
        raise ValueError(f"--percent {percent}: expected a fraction in (0, 1]")
    entries: dict = {}
    for scp in feats_scps:
        if not Path(scp).is_file():
            raise FileNotFoundError(f"{scp}: feature scp not found (run dump_features first)")
        entries.update(kaldiio.load_scp(str(scp)))
    if not entries:
        raise ValueError(f"no features in {', '.join(map(str, feats_scps))}")
    keys = sorted(entries)
    count = math.ceil(len(keys) * percent)
    chosen = np.random.default_rng(seed).choice(len(keys), size=count, replace=False)
    features = np.concatenate([entries[keys[index]] for index in sorted(chosen)], axis=0)
    logging.info("k-means training data: %d frames of %d of %d utterances", len(features), count, len(keys))
    return features.astype(np.float32, copy=False)


def learn_kmeans(features: np.ndarray, n_clusters: int, seed: int = 0, **settings) -> np.ndarray:
    """Cluster centres [n_clusters, dim] of MiniBatchKMeans over `features` [frames, dim]."""
    from sklearn.cluster import MiniBatchKMeans

    if n_clusters < 1:
        raise ValueError(f"--nclusters {n_clusters}: expected at least 1")
    if n_clusters > len(features):
        raise ValueError(
            f"--nclusters {n_clusters} is larger than the {len(features)} training frames: "
            "use fewer clusters or more data (--percent / kmeans_percent)"
        )
    options = {**FAIRSEQ_KMEANS_SETTINGS, **settings}
    kmeans = MiniBatchKMeans(n_clusters=n_clusters, random_state=seed, compute_labels=False, verbose=0, **options)
    kmeans.fit(features)
    inertia = -kmeans.score(features) / len(features)
    logging.info("k-means with %d clusters: mean squared distance to the nearest centre %.4f", n_clusters, inertia)
    return kmeans.cluster_centers_.astype(np.float32)


def save_centres(path: str | Path, centres: np.ndarray) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.asarray(centres, dtype=np.float32), allow_pickle=False)


def load_centres(path: str | Path) -> np.ndarray:
    """Centres from our `.npy` or from a fairseq `km.bin` (joblib-pickled MiniBatchKMeans)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: k-means model not found")
    if path.suffix == ".npy":
        centres = np.load(path, allow_pickle=False)
    else:
        import joblib

        try:
            centres = joblib.load(path).cluster_centers_
        except Exception as error:  # any unpickling failure means: not a km.bin
            raise ValueError(f"{path}: neither a .npy of cluster centres nor a joblib-pickled k-means model ({error})") from None
    if centres.ndim != 2:
        raise ValueError(f"{path}: cluster centres must be a [K, dim] matrix, got shape {centres.shape}")
    return centres.astype(np.float32)


class KmeansQuantizer:
    """Nearest-centre unit ids of feature frames (squared Euclidean distance, as fairseq's ApplyKmeans)."""

    def __init__(self, centres: np.ndarray, device: str = "cpu"):
        self.centres = torch.from_numpy(np.asarray(centres, dtype=np.float32)).to(device)
        self.centre_norms = (self.centres**2).sum(dim=1)

    @property
    def n_clusters(self) -> int:
        return self.centres.shape[0]

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> "KmeansQuantizer":
        return cls(load_centres(path), device=device)

    @torch.inference_mode()
    def __call__(self, features: np.ndarray | torch.Tensor) -> np.ndarray:
        frames = features if isinstance(features, torch.Tensor) else torch.tensor(features)  # a copy: kaldiio maps read-only
        frames = frames.to(device=self.centres.device, dtype=torch.float32)
        if frames.ndim != 2 or frames.shape[1] != self.centres.shape[1]:
            raise ValueError(f"features of shape {tuple(frames.shape)} do not match {self.centres.shape[1]}-dim centres")
        distances = (frames**2).sum(dim=1, keepdim=True) - 2 * frames @ self.centres.T + self.centre_norms
        return distances.argmin(dim=1).cpu().numpy()
