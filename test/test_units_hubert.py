"""HuBERT feature readers: fairseq-layout checkpoints and HuggingFace dirs give the HF model's layer output."""

from __future__ import annotations

import argparse
import enum
import json
import re
import sys
import types

import pytest
import torch
import torch.nn.functional as F

from sofa_speechlm.speech.fairseq_checkpoint import CheckpointError
from sofa_speechlm.speech.hubert import HubertFeatureReader
from units_testutils import tiny_hubert, tone

# transformers HubertModel name -> fairseq HuBERT name, written out independently of the loader.
HF_TO_FAIRSEQ = [
    (r"feature_extractor\.conv_layers\.(\d+)\.conv\.", r"feature_extractor.conv_layers.\1.0."),
    (r"feature_projection\.layer_norm\.", "layer_norm."),
    (r"feature_projection\.projection\.", "post_extract_proj."),
    (r"encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original0", "encoder.pos_conv.0.weight_g"),
    (r"encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original1", "encoder.pos_conv.0.weight_v"),
    (r"encoder\.pos_conv_embed\.conv\.bias", "encoder.pos_conv.0.bias"),
    (r"encoder\.layers\.(\d+)\.attention\.", r"encoder.layers.\1.self_attn."),
    (r"encoder\.layers\.(\d+)\.layer_norm\.", r"encoder.layers.\1.self_attn_layer_norm."),
    (r"encoder\.layers\.(\d+)\.feed_forward\.intermediate_dense\.", r"encoder.layers.\1.fc1."),
    (r"encoder\.layers\.(\d+)\.feed_forward\.output_dense\.", r"encoder.layers.\1.fc2."),
]


def fairseq_name(name: str, layer_norm_convs: bool) -> str:
    conv_norm = re.match(r"feature_extractor\.conv_layers\.(\d+)\.layer_norm\.(\w+)", name)
    if conv_norm:  # group norm: Sequential index 2; layer norm: Sequential(Transpose, LayerNorm, Transpose) at 2
        inner = "2.1" if layer_norm_convs else "2"
        return f"feature_extractor.conv_layers.{conv_norm[1]}.{inner}.{conv_norm[2]}"
    for pattern, replacement in HF_TO_FAIRSEQ:
        if re.match(pattern, name):
            return re.sub(pattern, replacement, name)
    return name  # encoder.layer_norm.*, encoder.layers.N.final_layer_norm.* keep their names


class Choices(enum.Enum):
    """Stands for fairseq's string enums (ChoiceEnum) that configs may hold."""

    DEFAULT = "default"
    LAYER_NORM = "layer_norm"


class Dictionary:
    """Stands for fairseq.data.dictionary.Dictionary in task_state."""

    def __init__(self):
        self.symbols, self.indices = ["<s>", "<pad>", "0", "1"], {"<s>": 0, "<pad>": 1, "0": 2, "1": 3}


def write_fairseq_checkpoint(model, path, architecture="hubert", normalize=False, layout="cfg"):
    """Saves `model` in fairseq's HuBERT checkpoint layout, pickling fake fairseq objects.

    layout: "cfg" (dicts, fairseq >= 0.10), "namespace" (cfg['model'] and cfg['task'] argparse
    Namespaces, as in checkpoints converted from the old layout) or "args" (one Namespace, no cfg).
    """
    config = model.config
    stable = config.do_stable_layer_norm
    state = {fairseq_name(name, stable): tensor for name, tensor in model.state_dict().items()}
    state["mask_emb"] = torch.zeros(config.hidden_size)
    state["label_embs_concat"] = torch.zeros(4, 8)
    state["final_proj.weight"], state["final_proj.bias"] = torch.zeros(8, config.hidden_size), torch.zeros(8)
    conv = " + ".join(f"[({d}, {k}, {s})]" for d, k, s in zip(config.conv_dim, config.conv_kernel, config.conv_stride))
    checkpoint = {
        "args": None,
        "cfg": {
            "model": {
                "_name": architecture,
                "encoder_layers": config.num_hidden_layers,
                "encoder_embed_dim": config.hidden_size,
                "encoder_ffn_embed_dim": config.intermediate_size,
                "encoder_attention_heads": config.num_attention_heads,
                "activation_fn": "gelu",
                "conv_feature_layers": conv,
                "conv_bias": config.conv_bias,
                "conv_pos": config.num_conv_pos_embeddings,
                "conv_pos_groups": config.num_conv_pos_embedding_groups,
                "extractor_mode": Choices.LAYER_NORM if stable else Choices.DEFAULT,
                "layer_norm_first": stable,
            },
            "task": {"_name": "hubert_pretraining", "normalize": normalize, "sample_rate": 16000, "labels": ["km"]},
        },
        "model": state,
        "task_state": {"dictionaries": [Dictionary()]},
    }
    if layout in ("namespace", "args"):  # the pre-hydra layout names the architecture `arch`
        cfg = checkpoint["cfg"]
        model_cfg = {"arch": cfg["model"].pop("_name"), **cfg["model"]}
        if layout == "namespace":
            cfg["model"], cfg["task"] = argparse.Namespace(**model_cfg), argparse.Namespace(**cfg["task"])
        else:
            task_cfg = {"task": cfg["task"].pop("_name"), **cfg["task"]}
            checkpoint["args"], checkpoint["cfg"] = argparse.Namespace(**task_cfg, **model_cfg), None
    # Pickle the stand-ins under fairseq's module names, then make those modules vanish again.
    fake_classes = {"fairseq.data.dictionary": Dictionary, "fairseq.dataclass.constants": Choices}
    fake_modules = ["fairseq", "fairseq.data", "fairseq.dataclass", *fake_classes]
    try:
        for module_name in fake_modules:
            sys.modules[module_name] = types.ModuleType(module_name)
        for module_name, cls in fake_classes.items():
            cls.__module__ = module_name
            setattr(sys.modules[module_name], cls.__name__, cls)
        torch.save(checkpoint, path)
    finally:
        for module_name in fake_modules:
            sys.modules.pop(module_name, None)
        for cls in fake_classes.values():
            cls.__module__ = __name__


def reference_features(model, waveform, layer, normalize):
    audio = torch.from_numpy(waveform)
    if normalize:
        audio = F.layer_norm(audio, audio.shape)
    with torch.no_grad():
        return model(audio[None], output_hidden_states=True).hidden_states[layer][0].numpy()


@pytest.mark.parametrize("stable, layer", [(False, 6), (True, 6), (True, 7)])
def test_fairseq_checkpoint_gives_hf_layer_features(tmp_path, stable, layer):
    model = tiny_hubert(stable_layer_norm=stable)
    path = tmp_path / "hubert.pt"
    write_fairseq_checkpoint(model, path, normalize=stable)
    assert "fairseq" not in sys.modules
    waveform = tone(1.0, 300)
    features = HubertFeatureReader(path, layer=layer).extract(waveform)
    expected = reference_features(model, waveform, layer, normalize=stable)
    assert features.shape == (49, 32)  # 50 Hz: 1 + (16000 - 400) // 320 frames
    torch.testing.assert_close(torch.from_numpy(features), torch.from_numpy(expected), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layout", ["namespace", "args"])
def test_fairseq_checkpoint_with_namespace_settings_loads(tmp_path, layout):
    model = tiny_hubert(stable_layer_norm=True)
    path = tmp_path / "hubert.pt"
    write_fairseq_checkpoint(model, path, normalize=True, layout=layout)
    waveform = tone(0.5, 300)
    features = HubertFeatureReader(path, layer=4).extract(waveform)
    expected = reference_features(model, waveform, 4, normalize=True)
    torch.testing.assert_close(torch.from_numpy(features), torch.from_numpy(expected), atol=1e-5, rtol=1e-5)


def test_fairseq_checkpoint_with_unreadable_settings_is_refused(tmp_path):
    path = tmp_path / "hubert.pt"
    torch.save({"model": {}, "cfg": {"model": [1, 2], "task": {}}}, path)
    with pytest.raises(CheckpointError, match=r"hubert\.pt: cfg\['model'\] is a list, expected a mapping or an argparse Namespace"):
        HubertFeatureReader(path)
    torch.save({"model": {}, "cfg": None, "args": None}, path)
    with pytest.raises(CheckpointError, match=r"hubert\.pt: no 'cfg' or 'args' entry: not a fairseq checkpoint"):
        HubertFeatureReader(path)


def test_huggingface_dir_gives_hf_layer_features(tmp_path):
    model = tiny_hubert()
    model.save_pretrained(tmp_path / "hf")
    waveform = tone(0.7, 500)
    features = HubertFeatureReader(tmp_path / "hf", layer=3).extract(waveform)
    expected = reference_features(model, waveform, 3, normalize=False)
    torch.testing.assert_close(torch.from_numpy(features), torch.from_numpy(expected), atol=1e-5, rtol=1e-5)


def test_long_audio_is_processed_in_chunks(tmp_path):
    model = tiny_hubert()
    model.save_pretrained(tmp_path / "hf")
    waveform = tone(2.5, 250)
    chunked = HubertFeatureReader(tmp_path / "hf", layer=2, max_chunk=16000)
    whole = HubertFeatureReader(tmp_path / "hf", layer=2)
    features = chunked.extract(waveform)
    # chunks of 16000 samples (49 frames each) forwarded separately, the 8000-sample tail too
    expected = [whole.extract(waveform[start : start + 16000]) for start in range(0, len(waveform), 16000)]
    assert features.shape[0] == 49 * 2 + 24
    torch.testing.assert_close(torch.from_numpy(features), torch.cat([torch.from_numpy(e) for e in expected]))


def test_other_architecture_checkpoint_is_refused(tmp_path):
    path = tmp_path / "wav2vec2.pt"
    write_fairseq_checkpoint(tiny_hubert(), path, architecture="wav2vec2")
    with pytest.raises(CheckpointError, match=r"wav2vec2\.pt: a fairseq 'wav2vec2' checkpoint, expected a HuBERT"):
        HubertFeatureReader(path)
    hf_dir = tmp_path / "w2v_hf"
    hf_dir.mkdir()
    (hf_dir / "config.json").write_text(json.dumps({"model_type": "wav2vec2"}))
    with pytest.raises(CheckpointError, match="model_type 'wav2vec2', expected 'hubert'"):
        HubertFeatureReader(hf_dir)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="garbage.pt: not a readable torch checkpoint"):
        HubertFeatureReader(garbage)
    with pytest.raises(CheckpointError, match="not found"):
        HubertFeatureReader(tmp_path / "missing.pt")


@pytest.mark.parametrize("layer", [0, 8])
def test_layer_outside_the_model_is_refused(tmp_path, layer):
    tiny_hubert().save_pretrained(tmp_path / "hf")
    with pytest.raises(ValueError, match=rf"--layer {layer} is outside .*7 transformer layers \(valid: 1..7\)"):
        HubertFeatureReader(tmp_path / "hf", layer=layer)


def test_fp16_huggingface_dir_loads_in_fp32(tmp_path):
    model = tiny_hubert()
    model.half().save_pretrained(tmp_path / "hf16")  # as published fp16 checkpoints are
    reader = HubertFeatureReader(tmp_path / "hf16", layer=3)
    assert {p.dtype for p in reader.model.parameters()} == {torch.float32}
    waveform = tone(0.7, 500)
    features = reader.extract(waveform)
    expected = reference_features(model.float(), waveform, 3, normalize=False)  # the fp16 weights, in fp32
    assert features.dtype == "float32"
    torch.testing.assert_close(torch.from_numpy(features), torch.from_numpy(expected), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("stable, do_normalize, warns", [(False, True, True), (True, False, True), (True, True, False), (False, None, False)])
def test_huggingface_dir_normalizes_as_its_preprocessor_config_says(tmp_path, caplog, stable, do_normalize, warns):
    model = tiny_hubert(stable_layer_norm=stable)
    model.save_pretrained(tmp_path / "hf")
    if do_normalize is not None:
        (tmp_path / "hf/preprocessor_config.json").write_text(json.dumps(
            {"feature_extractor_type": "Wav2Vec2FeatureExtractor", "do_normalize": do_normalize, "sampling_rate": 16000}))
    waveform = 0.3 * tone(0.7, 500) + 0.1
    with caplog.at_level("WARNING"):
        reader = HubertFeatureReader(tmp_path / "hf", layer=3)
    expected_normalize = stable if do_normalize is None else do_normalize
    assert reader.normalize == expected_normalize
    assert ("preprocessor_config.json: do_normalize" in caplog.text) == warns
    expected = reference_features(model, waveform, 3, normalize=expected_normalize)
    torch.testing.assert_close(torch.from_numpy(reader.extract(waveform)), torch.from_numpy(expected), atol=1e-5, rtol=1e-5)


def test_preprocessor_config_of_another_sampling_rate_is_refused(tmp_path):
    tiny_hubert().save_pretrained(tmp_path / "hf")
    (tmp_path / "hf/preprocessor_config.json").write_text(json.dumps({"do_normalize": False, "sampling_rate": 8000}))
    with pytest.raises(CheckpointError, match=r"preprocessor_config.json: sampling_rate 8000, expected 16000"):
        HubertFeatureReader(tmp_path / "hf")
