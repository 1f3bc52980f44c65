"""Activation outliers of a SpeechLM, with the conventions of Qualcomm's outlier-free-transformers.

Forward hooks on every decoder layer's output, its attention output projection, its FFN output
projection (OPT fc2, Qwen2/Llama down_proj) and its two LayerNorms record, per sequence and over
the sequence's positions of one modality, the infinity norm and the Pearson kurtosis (Gaussian ~ 3,
unbiased std) of the flattened [positions x hidden] values. Per module these are averaged over
sequences; a layer's max infinity norm is the max over its modules of those averages (the paper's
Figure 4 quantity), its kurtosis the mean over its modules.

Modalities (the paper's Figure 4 columns): "text" = text-token positions of textLM sequences,
"speech" = unit-token positions of speechLM sequences, "speech+text" = every position of the ASR
and TTS sequences.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import torch

from sofa_speechlm.text.templates import SPECIAL_TOKENS
from sofa_speechlm.text.unit_chars import is_unit_char

SPACE_PIECE = "\u2581"  # sentencepiece's word-boundary mark
MODALITIES = ("text", "speech", "speech+text")
# modality -> (LM text files of the test set, which positions count)
MODALITY_SOURCES = {"text": (("textlm",), "text"), "speech": (("speechlm",), "unit"), "speech+text": (("asr", "tts"), "all")}
KURTOSIS_EPS = 1e-6  # as Qualcomm's kurtosis(): mu4 / (std ** 4 + eps)


@dataclass(frozen=True)
class HookTable:
    """Where one model family keeps its decoder layers and the per-layer modules to hook."""

    layers: str  # dotted path of the ModuleList of decoder layers in the causal LM
    modules: dict  # kind -> dotted path inside a layer ("" = the layer's own output)


_QWEN2_LIKE = HookTable(
    "model.layers",
    {"layer": "", "attn_out_proj": "self_attn.o_proj", "ffn_out_proj": "mlp.down_proj",
     "attn_norm": "input_layernorm", "ffn_norm": "post_attention_layernorm"},
)
# config.model_type -> hook table; the next family is one entry.
HOOK_TABLES = {
    "opt": HookTable(
        "model.decoder.layers",
        {"layer": "", "attn_out_proj": "self_attn.out_proj", "ffn_out_proj": "fc2",
         "attn_norm": "self_attn_layer_norm", "ffn_norm": "final_layer_norm"},
    ),
    "qwen2": _QWEN2_LIKE,
    "llama": _QWEN2_LIKE,
}


def hooked_modules(model) -> list[tuple[str, int, str, torch.nn.Module]]:
    """(name, layer index, kind, module) of every module the statistics are taken on."""
    model_type = getattr(model.config, "model_type", None)
    if model_type not in HOOK_TABLES:
        raise ValueError(f"outlier statistics do not know model type {model_type!r}; known: {', '.join(HOOK_TABLES)}")
    table = HOOK_TABLES[model_type]
    try:
        layers = model.get_submodule(table.layers)
    except AttributeError as error:
        raise ValueError(f"{model_type} model has no decoder layers at '{table.layers}': {error}") from error
    found = []
    for index, layer in enumerate(layers):
        for kind, path in table.modules.items():
            try:
                module = layer.get_submodule(path) if path else layer
            except AttributeError as error:
                raise ValueError(f"{model_type} layer {index} has no module '{path}' ({kind}): {error}") from error
            found.append((f"layers.{index}" + (f".{path}" if path else ""), index, kind, module))
    return found


def piece_kind(piece: str) -> str:
    """'unit' for a piece of unit characters, 'special' for special/ESPnet tokens and a bare
    word-boundary mark, else 'text'."""
    if piece in SPECIAL_TOKENS or (piece.startswith("<") and piece.endswith(">")):
        return "special"
    body = piece.lstrip(SPACE_PIECE)
    if not body:
        return "special"
    if all(is_unit_char(char) for char in body):
        return "unit"
    return "text"


def position_mask(pieces: Sequence[str], positions: str) -> list[bool]:
    """Which positions of a sequence count for a modality ('text', 'unit' or 'all')."""
    if positions == "all":
        return [True] * len(pieces)
    return [piece_kind(piece) == positions for piece in pieces]


def sequence_stats(x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per sequence of x [B, T, d] over the positions mask [B, T]: (inf norm [B], kurtosis [B], has positions [B])."""
    x = x.detach().float()
    inf_norms, kurtoses = [], []
    present = mask.any(dim=1)
    for values, keep in zip(x, mask):
        flat = values[keep].reshape(-1)
        if flat.numel() < 2:
            inf_norms.append(flat.abs().max() if flat.numel() else torch.tensor(0.0))
            kurtoses.append(torch.tensor(float("nan")))
            continue
        centered = flat - flat.mean()
        inf_norms.append(flat.abs().max())
        kurtoses.append((centered**4).mean() / (flat.std() ** 4 + KURTOSIS_EPS))
    return torch.stack(inf_norms).cpu(), torch.stack(kurtoses).cpu(), present.cpu()


@dataclass
class OutlierCollector:
    """Forward hooks that accumulate per-sequence statistics per (module, modality).

    Set `modality` and `mask` ([B, T] bool on the model's device) before each forward pass."""

    model: torch.nn.Module
    modality: str | None = None
    mask: torch.Tensor | None = None
    inf_norms: dict = field(default_factory=lambda: defaultdict(list))  # (name, modality) -> [float]
    kurtoses: dict = field(default_factory=lambda: defaultdict(list))

    def __post_init__(self):
        self.modules = hooked_modules(self.model)
        self._handles = []

    def __enter__(self):
        for name, _, _, module in self.modules:
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _hook(self, name):
        def record(module, args, output):
            if self.mask is None:
                return
            tensor = output[0] if isinstance(output, tuple) else output
            batch, length = self.mask.shape
            if tensor.dim() == 2 and tensor.shape[0] == batch * length:  # OPT's FFN works on [B*T, d]
                tensor = tensor.view(batch, length, -1)
            if tensor.dim() != 3 or tensor.shape[:2] != self.mask.shape:
                raise ValueError(f"{name}: output of shape {tuple(tensor.shape)} does not match the batch {tuple(self.mask.shape)}")
            norms, kurt, present = sequence_stats(tensor, self.mask)
            self.inf_norms[name, self.modality] += norms[present].tolist()
            self.kurtoses[name, self.modality] += [k for k in kurt[present].tolist() if k == k]

        return record

    def summary(self) -> dict:
        """The outliers.json statistics: per module, per layer and overall, per modality."""
        modalities = [m for m in MODALITIES if any(key[1] == m for key in self.inf_norms)]
        num_layers = 1 + max(index for _, index, _, _ in self.modules)
        modules, per_layer, overall = {}, {}, {}
        for modality in modalities:
            layer_norms = [[] for _ in range(num_layers)]
            layer_kurt = [[] for _ in range(num_layers)]
            rows = []
            for name, index, kind, _ in self.modules:
                norms, kurt = self.inf_norms.get((name, modality), []), self.kurtoses.get((name, modality), [])
                if not norms:
                    continue
                row = {
                    "mean_inf_norm": sum(norms) / len(norms), "max_inf_norm": max(norms),
                    "mean_kurtosis": sum(kurt) / len(kurt) if kurt else None, "max_kurtosis": max(kurt) if kurt else None,
                    "sequences": len(norms),
                }
                modules.setdefault(name, {"layer": index, "kind": kind})[modality] = row
                layer_norms[index].append(row["mean_inf_norm"])
                if row["mean_kurtosis"] is not None:
                    layer_kurt[index].append(row["mean_kurtosis"])
                rows.append((name, kind, row))
            per_layer[modality] = {
                "max_inf_norm": [max(v) if v else None for v in layer_norms],
                "mean_kurtosis": [sum(v) / len(v) if v else None for v in layer_kurt],
            }
            top_name, _, top = max(rows, key=lambda r: r[2]["mean_inf_norm"])
            kurtoses = [r["mean_kurtosis"] for _, _, r in rows if r["mean_kurtosis"] is not None]
            overall[modality] = {
                "max_inf_norm": top["mean_inf_norm"], "max_inf_norm_module": top_name,
                "max_ffn_inf_norm": max((r["mean_inf_norm"] for _, k, r in rows if k == "ffn_out_proj"), default=None),
                "max_layer_inf_norm": max((r["mean_inf_norm"] for _, k, r in rows if k == "layer"), default=None),
                "mean_kurtosis": sum(kurtoses) / len(kurtoses) if kurtoses else None,
                "max_kurtosis": max(kurtoses) if kurtoses else None,
                "sequences": top["sequences"],
            }
        return {"num_layers": num_layers, "summary": overall, "per_layer": per_layer, "modules": modules}


def pad_batch(sequences: Sequence[Sequence[int]], masks: Sequence[Sequence[bool]], device) -> tuple[torch.Tensor, ...]:
    """Right-padded (input_ids, attention_mask, modality mask) of token-id sequences."""
    length = max(len(s) for s in sequences)
    ids = torch.zeros(len(sequences), length, dtype=torch.long)
    attention = torch.zeros(len(sequences), length, dtype=torch.long)
    keep = torch.zeros(len(sequences), length, dtype=torch.bool)
    for row, (seq, mask) in enumerate(zip(sequences, masks)):
        ids[row, : len(seq)] = torch.tensor(seq)
        attention[row, : len(seq)] = 1
        keep[row, : len(seq)] = torch.tensor(mask, dtype=torch.bool)
    return ids.to(device), attention.to(device), keep.to(device)


@torch.no_grad()
def collect_outliers(model, batches: Iterable[tuple[str, list[list[int]], list[list[bool]]]], device="cpu", progress=None) -> dict:
    """Statistics of `model` over (modality, token-id sequences, position masks) batches."""
    collector = OutlierCollector(model)
    with collector:
        for modality, sequences, masks in batches:
            if modality not in MODALITIES:
                raise ValueError(f"unknown modality {modality!r}; expected one of {MODALITIES}")
            ids, attention, keep = pad_batch(sequences, masks, device)
            collector.modality, collector.mask = modality, keep & attention.bool()
            model(input_ids=ids, attention_mask=attention)
            if progress is not None:
                progress.update(len(sequences))
    return collector.summary()
