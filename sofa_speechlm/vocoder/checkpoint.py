"""Generator checkpoints in the layout published by speech-resynthesis and fairseq.

A released unit vocoder is a torch file `{"generator": state_dict}` with old-style weight-norm
parameters (`conv_pre.weight_g`, `conv_pre.weight_v`, ...) and a `config.json` beside it.
torch 2.x's parametrized weight norm names them `parametrizations.weight.original0/1`; this
module maps between the two so released vocoders load here and ours load there.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import torch

from sofa_speechlm.vocoder.config import VocoderConfig, VocoderConfigError
from sofa_speechlm.vocoder.generator import CodeHiFiGANGenerator

PARAMETRIZED = {".parametrizations.weight.original0": ".weight_g", ".parametrizations.weight.original1": ".weight_v"}
CONFIG_NAME = "config.json"


def published_name(key: str) -> str:
    for ours, theirs in PARAMETRIZED.items():
        if key.endswith(ours):
            return key[: -len(ours)] + theirs
    return key


def to_published_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {published_name(key): value for key, value in state.items()}


def from_published_keys(published: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Renames weight_g/weight_v to parametrization names; a folded `weight` is split into g and v."""
    state = {}
    for key, value in published.items():
        for ours, theirs in PARAMETRIZED.items():
            if key.endswith(theirs):
                key = key[: -len(theirs)] + ours
                break
        else:
            prefix = key[: -len(".weight")]
            if key.endswith(".weight") and key not in expected and prefix + ".parametrizations.weight.original1" in expected:
                dims = tuple(range(1, value.dim()))
                state[prefix + ".parametrizations.weight.original0"] = torch.linalg.vector_norm(value, dim=dims, keepdim=True)
                key = prefix + ".parametrizations.weight.original1"  # the folded weight is its own direction
        state[key] = value
    return state


def check_state_matches(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], source: str) -> None:
    """Names the first keys that a config and a checkpoint disagree on."""
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    mismatched = [
        f"{published_name(key)}: checkpoint {tuple(state[key].shape)}, config {tuple(expected[key].shape)}"
        for key in expected
        if key in state and state[key].shape != expected[key].shape
    ]
    problems = []
    if mismatched:
        problems.append("shape mismatch " + "; ".join(mismatched[:5]))
    if missing:
        problems.append(f"missing keys {to_published_list(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {to_published_list(unexpected)}")
    if problems:
        raise VocoderConfigError(f"{source}: the checkpoint does not match its vocoder config: " + " | ".join(problems))


def to_published_list(keys: list[str]) -> str:
    names = [published_name(key) for key in keys]
    return str(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")


def read_checkpoint(path: str | Path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: vocoder checkpoint not found")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or foreign files
        raise VocoderConfigError(f"{path}: not a readable torch checkpoint ({type(error).__name__}: {error})") from None
    if not isinstance(checkpoint, dict) or "generator" not in checkpoint:
        keys = list(checkpoint)[:10] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise VocoderConfigError(f"{path}: expected a dict with key 'generator' (published vocoder layout), found {keys}")
    return checkpoint


def load_generator(path: str | Path, config: str | Path | VocoderConfig | None = None) -> CodeHiFiGANGenerator:
    """A generator from a published-layout checkpoint (or one of our training checkpoints).

    The config is, in order: the `config` argument, the config stored in the checkpoint (ours),
    or `config.json` beside the checkpoint (released vocoders). A config that leaves
    dur_prediction_weight unset gets a duration predictor when the checkpoint has one (fairseq)
    and none otherwise (speech-resynthesis).
    """
    path = Path(path)
    checkpoint = read_checkpoint(path)
    if config is None:
        if isinstance(checkpoint.get("config"), dict):
            config = VocoderConfig.from_dict(checkpoint["config"], source=f"{path} (stored config)")
        else:
            config = path.parent / CONFIG_NAME
    if not isinstance(config, VocoderConfig):
        config = VocoderConfig.from_file(config, strict=False)
    generator = CodeHiFiGANGenerator(config)
    state = from_published_keys(checkpoint["generator"], generator.state_dict())
    if generator.dur_predictor is not None and config.dur_prediction_weight is None and not any(
        key.startswith("dur_predictor.") for key in state
    ):
        # speech-resynthesis: dur_predictor_params without dur_prediction_weight builds no predictor
        logging.info("%s: no duration predictor in the checkpoint: its config's dur_predictor_params are unused", path)
        config = dataclasses.replace(config, dur_prediction_weight=0.0)
        generator = CodeHiFiGANGenerator(config)
    expected = generator.state_dict()
    check_state_matches(state, expected, str(path))
    generator.load_state_dict(state)
    return generator.eval()


def save_published(generator: CodeHiFiGANGenerator, path: str | Path) -> None:
    """Writes `{"generator": ...}` with weight_g/weight_v keys and config.json beside it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"generator": to_published_keys(generator.state_dict())}, tmp)
    tmp.replace(path)
    (path.parent / CONFIG_NAME).write_text(json.dumps(generator.config.to_dict(), indent=2) + "\n", encoding="utf-8")
