"""Reading fairseq HuBERT checkpoints (e.g. hubert_base_ls960.pt) without importing fairseq.

fairseq does not import on Python 3.11, yet its checkpoints are ordinary torch pickles: the
`model` entry holds plain tensors, while `task_state` (and sometimes `cfg`) hold fairseq
objects such as `Dictionary`. A tolerant unpickler stands in for those classes, and the
weights are renamed onto transformers' `HubertModel`, whose layers compute the same thing.
"""

from __future__ import annotations

import argparse
import ast
import pickle
import re
import types
from pathlib import Path
from typing import Any

import torch


class CheckpointError(ValueError):
    """A checkpoint that cannot be read as a fairseq HuBERT model."""


class UnresolvedObject:
    """Stand-in for an object of a class that cannot be imported (fairseq's Dictionary, enums)."""

    def __init__(self, *args: Any, **kwargs: Any):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __str__(self) -> str:
        # fairseq's string enums pickle as `cls(value)`: their value is the first argument.
        return str(self.args[0]) if self.args else super().__str__()


class TolerantUnpickler(pickle.Unpickler):
    """Unpickler that maps classes of modules that fail to import onto `UnresolvedObject`."""

    def find_class(self, module: str, name: str) -> Any:
        if module.split(".")[0] != "fairseq":
            try:
                return super().find_class(module, name)
            except (ImportError, AttributeError):
                pass
        return type(name, (UnresolvedObject,), {"__module__": f"unresolved.{module}"})


# torch.load takes a module-like object whose `Unpickler` it subclasses.
tolerant_pickle = types.ModuleType("tolerant_pickle")
tolerant_pickle.__dict__.update({name: value for name, value in vars(pickle).items() if not name.startswith("__")})
tolerant_pickle.Unpickler = TolerantUnpickler


def load_tolerant(path: str | Path) -> Any:
    """torch.load of a trusted checkpoint whose pickled classes may not be importable."""
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=tolerant_pickle)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError) as error:
        raise CheckpointError(f"{path}: not a readable torch checkpoint ({error})") from None


def _evaluate_literal(node: ast.AST) -> Any:
    """Evaluates literals combined with + and * (fairseq's conv_feature_layers string)."""
    if isinstance(node, ast.Expression):
        return _evaluate_literal(node.body)
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        values = [_evaluate_literal(element) for element in node.elts]
        return values if isinstance(node, ast.List) else tuple(values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Mult)):
        left, right = _evaluate_literal(node.left), _evaluate_literal(node.right)
        return left + right if isinstance(node.op, ast.Add) else left * right
    raise ValueError(f"unsupported expression {ast.dump(node)}")


def parse_conv_layers(spec: str) -> list[tuple[int, int, int]]:
    """'[(512,10,5)] + [(512,3,2)] * 4' -> [(dim, kernel, stride), ...]."""
    try:
        layers = _evaluate_literal(ast.parse(spec, mode="eval"))
        return [(int(dim), int(kernel), int(stride)) for dim, kernel, stride in layers]
    except (SyntaxError, ValueError, TypeError) as error:
        raise CheckpointError(f"conv_feature_layers '{spec}' is not a list of (dim, kernel, stride): {error}") from None


def _as_mapping(value: Any, name: str, path: str | Path) -> dict:
    """A settings section as a dict: fairseq stores dicts, but also argparse Namespaces
    (checkpoints converted from the pre-hydra `args` layout), and fairseq's loader takes both."""
    if value is None:
        return {}
    if isinstance(value, argparse.Namespace):
        return vars(value)
    if isinstance(value, dict):
        return value
    raise CheckpointError(f"{path}: {name} is a {type(value).__name__}, expected a mapping or an argparse Namespace")


def model_settings(checkpoint: dict, path: str | Path) -> tuple[dict, dict]:
    """(model settings, task settings) from `cfg` (fairseq >= 0.10) or `args` (older)."""
    cfg = _as_mapping(checkpoint.get("cfg"), "cfg", path)
    model = _as_mapping(cfg.get("model"), "cfg['model']", path)
    task = _as_mapping(cfg.get("task"), "cfg['task']", path)
    if not model and checkpoint.get("args") is not None:  # the layout before fairseq 0.10
        model = task = _as_mapping(checkpoint["args"], "args", path)
    if not model:
        what = "cfg['model'] is missing or empty" if cfg else "no 'cfg' or 'args' entry"
        raise CheckpointError(f"{path}: {what}: not a fairseq checkpoint")
    return model, dict(task)


def hubert_config_from_fairseq(model: dict, task: dict, path: str | Path):
    """transformers HubertConfig equivalent to a fairseq HuBERT model config."""
    from transformers import HubertConfig

    architecture = str(model.get("_name", model.get("arch", "")))
    if architecture != "hubert":
        raise CheckpointError(
            f"{path}: a fairseq '{architecture or 'unknown'}' checkpoint, expected a HuBERT model "
            "(cfg.model._name == 'hubert', e.g. hubert_base_ls960.pt)"
        )
    conv_layers = parse_conv_layers(str(model.get("conv_feature_layers", "[(512,10,5)] + [(512,3,2)] * 4 + [(512,2,2)] * 2")))
    extractor_mode = str(model.get("extractor_mode", "default"))
    if extractor_mode not in ("default", "layer_norm"):
        raise CheckpointError(f"{path}: extractor_mode '{extractor_mode}' is neither 'default' nor 'layer_norm'")
    return HubertConfig(
        hidden_size=int(model.get("encoder_embed_dim", 768)),
        num_hidden_layers=int(model.get("encoder_layers", 12)),
        num_attention_heads=int(model.get("encoder_attention_heads", 12)),
        intermediate_size=int(model.get("encoder_ffn_embed_dim", 3072)),
        hidden_act=str(model.get("activation_fn", "gelu")),
        conv_dim=[layer[0] for layer in conv_layers],
        conv_kernel=[layer[1] for layer in conv_layers],
        conv_stride=[layer[2] for layer in conv_layers],
        conv_bias=bool(model.get("conv_bias", False)),
        num_conv_pos_embeddings=int(model.get("conv_pos", 128)),
        num_conv_pos_embedding_groups=int(model.get("conv_pos_groups", 16)),
        feat_extract_norm="layer" if extractor_mode == "layer_norm" else "group",
        do_stable_layer_norm=bool(model.get("layer_norm_first", False)),
        feat_proj_layer_norm=True,
        mask_time_prob=0.0,
        mask_feature_prob=0.0,
        sampling_rate=int(task.get("sample_rate", 16000)),
    )


# fairseq name pattern -> transformers HubertModel name (the published conversion's mapping).
_KEY_RULES = [
    (r"feature_extractor\.conv_layers\.(\d+)\.0\.(weight|bias)", r"feature_extractor.conv_layers.\1.conv.\2"),
    (r"feature_extractor\.conv_layers\.(\d+)\.2\.(?:1\.)?(weight|bias)", r"feature_extractor.conv_layers.\1.layer_norm.\2"),
    (r"layer_norm\.(weight|bias)", r"feature_projection.layer_norm.\1"),
    (r"post_extract_proj\.(weight|bias)", r"feature_projection.projection.\1"),
    (r"encoder\.pos_conv\.0\.weight_g", "encoder.pos_conv_embed.conv.parametrizations.weight.original0"),
    (r"encoder\.pos_conv\.0\.weight_v", "encoder.pos_conv_embed.conv.parametrizations.weight.original1"),
    (r"encoder\.pos_conv\.0\.bias", "encoder.pos_conv_embed.conv.bias"),
    (r"encoder\.layer_norm\.(weight|bias)", r"encoder.layer_norm.\1"),
    (r"encoder\.layers\.(\d+)\.self_attn\.(k_proj|v_proj|q_proj|out_proj)\.(weight|bias)", r"encoder.layers.\1.attention.\2.\3"),
    (r"encoder\.layers\.(\d+)\.self_attn_layer_norm\.(weight|bias)", r"encoder.layers.\1.layer_norm.\2"),
    (r"encoder\.layers\.(\d+)\.fc1\.(weight|bias)", r"encoder.layers.\1.feed_forward.intermediate_dense.\2"),
    (r"encoder\.layers\.(\d+)\.fc2\.(weight|bias)", r"encoder.layers.\1.feed_forward.output_dense.\2"),
    (r"encoder\.layers\.(\d+)\.final_layer_norm\.(weight|bias)", r"encoder.layers.\1.final_layer_norm.\2"),
]
# Pre-training heads that feature extraction never uses.
_UNUSED_KEYS = re.compile(r"(mask_emb|label_embs_concat|final_proj\..*)")


def rename_fairseq_key(name: str) -> str | None:
    """transformers name of a fairseq HuBERT weight; None for weights extraction does not use."""
    for pattern, replacement in _KEY_RULES:
        if re.fullmatch(pattern, name):
            return re.sub(pattern, replacement, name)
    if _UNUSED_KEYS.fullmatch(name):
        return None
    raise KeyError(name)


def load_fairseq_hubert(path: str | Path):
    """(transformers HubertModel in eval mode, normalize waveform?) from a fairseq checkpoint."""
    from transformers import HubertModel

    checkpoint = load_tolerant(path)
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        raise CheckpointError(f"{path}: no 'model' state dict: not a fairseq checkpoint")
    model_cfg, task_cfg = model_settings(checkpoint, path)
    config = hubert_config_from_fairseq(model_cfg, task_cfg, path)
    state = {}
    for name, tensor in checkpoint["model"].items():
        try:
            renamed = rename_fairseq_key(name)
        except KeyError:
            raise CheckpointError(f"{path}: unexpected weight '{name}' for a fairseq HuBERT model") from None
        if renamed is not None:
            state[renamed] = tensor
    model = HubertModel(config)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as error:
        raise CheckpointError(f"{path}: weights do not fit the HuBERT config in the checkpoint ({error})") from None
    if result.missing_keys:
        raise CheckpointError(f"{path}: weights missing for {', '.join(result.missing_keys[:5])} (fairseq HuBERT layout expected)")
    if result.unexpected_keys:
        raise CheckpointError(f"{path}: weights that do not fit HubertModel: {', '.join(result.unexpected_keys[:5])}")
    return model.eval(), bool(task_cfg.get("normalize", False))
