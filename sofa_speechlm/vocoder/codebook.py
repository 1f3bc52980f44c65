"""Which k-means codebook a unit vocoder belongs to.

A vocoder learned what each unit id sounds like under one k-means model: with another model
(another K, or the same K over other features or data) the same ids mean other sounds and
the TTS output is noise without any error. Stage 2b therefore records the k-means model a
vocoder was trained with in the vocoder dir (`kmeans.json`: file, md5, K) and refuses a
vocoder whose codebook size differs from K or whose record names another k-means model.
Published vocoders carry no record; for them only the codebook size is checked.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from sofa_speechlm.vocoder.config import VocoderConfig, VocoderConfigError

CODEBOOK_FILE = "kmeans.json"


class CodebookMismatch(VocoderConfigError):
    """A vocoder and a k-means model whose unit ids do not mean the same thing."""


def file_md5(path: str | Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def kmeans_record(kmeans_file: str | Path) -> dict:
    """{"kmeans_file", "md5", "nclusters"} of a k-means model (our km.npy or fairseq's km.bin)."""
    from sofa_speechlm.speech.kmeans import load_centres

    return {"kmeans_file": str(kmeans_file), "md5": file_md5(kmeans_file), "nclusters": int(load_centres(kmeans_file).shape[0])}


def read_record(vocoder_dir: str | Path) -> dict | None:
    """The k-means record of a vocoder dir; None for vocoders without one (published ones)."""
    path = Path(vocoder_dir) / CODEBOOK_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise VocoderConfigError(f"{path}: not valid JSON ({error})") from None
    if not isinstance(record, dict) or not {"kmeans_file", "md5", "nclusters"} <= set(record):
        raise VocoderConfigError(f"{path}: expected keys kmeans_file, md5, nclusters")
    return record


def write_record(vocoder_dir: str | Path, record: dict) -> None:
    path = Path(vocoder_dir) / CODEBOOK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def check_codebook(vocoder_file: str | Path, num_embeddings: int, kmeans: dict, record: dict | None) -> None:
    """Raises CodebookMismatch naming both files unless the vocoder fits the k-means model `kmeans`."""
    if num_embeddings != kmeans["nclusters"]:
        raise CodebookMismatch(
            f"the vocoder {vocoder_file} has a codebook of {num_embeddings} units, but the k-means model "
            f"{kmeans['kmeans_file']} has K={kmeans['nclusters']} clusters: use a vocoder trained on units of this "
            "k-means model (or train one in stage 2b)"
        )
    if record is not None and record["md5"] != kmeans["md5"]:
        raise CodebookMismatch(
            f"the vocoder {vocoder_file} was trained with the k-means model {record['kmeans_file']} (md5 {record['md5']}), "
            f"not with {kmeans['kmeans_file']} (md5 {kmeans['md5']}): the same unit ids mean other sounds under "
            "another codebook; use that k-means model (--kmeans_file) or a vocoder trained on this one"
        )


def vocoder_codebook_size(vocoder_dir: str | Path) -> int:
    """num_embeddings of a vocoder dir's config.json (the generator's default where the key is absent)."""
    config_path = Path(vocoder_dir) / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(f"{config_path}: vocoder config not found (stage 2b writes it)")
    try:
        return int(json.loads(config_path.read_text(encoding="utf-8")).get("num_embeddings", VocoderConfig.num_embeddings))
    except (json.JSONDecodeError, AttributeError, TypeError, ValueError) as error:
        raise VocoderConfigError(f"{config_path}: no integer num_embeddings ({error})") from None


def check_vocoder_dir(vocoder_dir: str | Path, kmeans_file: str | Path) -> None:
    """The codebook check of a stage-2b vocoder dir (its config.json's num_embeddings and its record)."""
    config_path = Path(vocoder_dir) / "config.json"
    check_codebook(config_path, vocoder_codebook_size(vocoder_dir), kmeans_record(kmeans_file), read_record(vocoder_dir))


def record_codebook(vocoder_dir: str | Path, kmeans: dict | None) -> None:
    """Checks the written vocoder's codebook size against K and records the k-means model (no-op without one)."""
    if kmeans is None:
        return
    check_codebook(Path(vocoder_dir) / "config.json", vocoder_codebook_size(vocoder_dir), kmeans, None)
    write_record(vocoder_dir, kmeans)
