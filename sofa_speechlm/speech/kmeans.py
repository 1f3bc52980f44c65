"""k-means quantisation of frame features into unit ids (fairseq simple_kmeans settings).

The learned model is stored as its cluster centres only (`.npy`, [K, dim] float32), which
load without unpickling sklearn objects; fairseq's published `km.bin` files (joblib-pickled
MiniBatchKMeans) load too, through their `cluster_centers_`.
"""

from __future__ import annotations

import logging
from pathlib import Path

import kaldiio
import numpy as np

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


def sample_features(feats_scps: list[str | Path], max_frames: int, seed: int) -> np.ndarray:
    """Up to `max_frames` frames of the utterances in the scp files, in utterance-id order.

    The utterances are read one at a time; once more than `max_frames` frames have been seen, a
    seeded reservoir keeps a uniform random sample of them, so memory stays at `max_frames`
    frames plus one utterance whatever the size of the dump. When every frame fits, the result
    is all frames in utterance-id order.
    """
    if max_frames < 1:
        raise ValueError(f"--max_frames {max_frames}: expected at least 1")
    entries: dict = {}  # utt_id -> the lazy reader of its scp (reading one matrix at a time)
    for scp in feats_scps:
        if not Path(scp).is_file():
            raise FileNotFoundError(f"{scp}: feature scp not found (run dump_features first)")
        reader = kaldiio.load_scp(str(scp))
        entries.update(dict.fromkeys(reader.keys(), reader))
    if not entries:
        raise ValueError(f"no features in {', '.join(map(str, feats_scps))}")
    rng = np.random.default_rng(seed)
    reservoir: np.ndarray | None = None
    seen = 0
    for key in sorted(entries):
        frames = np.asarray(entries[key][key])
        if reservoir is None:
            reservoir = np.empty((max_frames, frames.shape[1]), dtype=np.float32)
        elif frames.shape[1] != reservoir.shape[1]:
            raise ValueError(f"{key}: {frames.shape[1]}-dim features, but earlier utterances have {reservoir.shape[1]} dims")
        filled = max(0, min(len(frames), max_frames - seen))
        reservoir[seen : seen + filled] = frames[:filled]
        if filled < len(frames):  # reservoir sampling: frame number g replaces a random slot with probability max/(g+1)
            positions = np.arange(seen + filled, seen + len(frames))
            slots = rng.integers(0, positions + 1)
            keep = slots < max_frames
            reservoir[slots[keep]] = frames[filled:][keep]
        seen += len(frames)
    kept = min(seen, max_frames)
    logging.info("k-means training data: %d frames of %d utterances%s", kept, len(entries),
                 f" (a uniform sample of their {seen} frames, --max_frames)" if seen > max_frames else "")
    return reservoir[:kept]


def learn_kmeans(features: np.ndarray, n_clusters: int, seed: int = 0, **settings) -> np.ndarray:
    """Cluster centres [n_clusters, dim] of MiniBatchKMeans over `features` [frames, dim]."""
    from sklearn.cluster import MiniBatchKMeans

    if n_clusters < 1:
        raise ValueError(f"--nclusters {n_clusters}: expected at least 1")
    if n_clusters > len(features):
        raise ValueError(
            f"--nclusters {n_clusters} is larger than the {len(features)} training frames: "
            "use fewer clusters or more data (dump_features --percent / --max_frames, run.sh kmeans_percent / kmeans_max_frames)"
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
        import torch  # here, so that learning k-means does not load torch

        self.centres = torch.from_numpy(np.asarray(centres, dtype=np.float32)).to(device)
        self.centre_norms = (self.centres**2).sum(dim=1)

    @property
    def n_clusters(self) -> int:
        return self.centres.shape[0]

    @property
    def dim(self) -> int:
        return self.centres.shape[1]

    @classmethod
    def load(cls, path: str | Path, device: str = "cpu") -> "KmeansQuantizer":
        return cls(load_centres(path), device=device)

    def __call__(self, features) -> np.ndarray:
        """Unit ids [frames] of features [frames, dim] (numpy array or torch tensor)."""
        import torch

        with torch.inference_mode():
            frames = features if isinstance(features, torch.Tensor) else torch.tensor(features)  # a copy: kaldiio maps read-only
            frames = frames.to(device=self.centres.device, dtype=torch.float32)
            if frames.ndim != 2 or frames.shape[1] != self.centres.shape[1]:
                raise ValueError(f"features of shape {tuple(frames.shape)} do not match {self.centres.shape[1]}-dim centres")
            distances = (frames**2).sum(dim=1, keepdim=True) - 2 * frames @ self.centres.T + self.centre_norms
            return distances.argmin(dim=1).cpu().numpy()
