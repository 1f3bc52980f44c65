"""SofaCausalLM: pretrained loading, vocabulary, KV-cached scoring, LoRA/QLoRA, bad input."""

import pytest
import torch
from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    OPTConfig,
    OPTForCausalLM,
    Qwen2Config,
    Qwen2ForCausalLM,
)

from sofa_speechlm.lm.backbone import BackboneError
from sofa_speechlm.lm.causal_lm import SofaCausalLM
from sofa_speechlm.lm.espnet_model import SofaSpeechLanguageModel

VOCAB = 40
TINY_OPT = dict(
    model_type="opt", hidden_size=32, word_embed_proj_dim=32, num_hidden_layers=2,
    num_attention_heads=4, ffn_dim=64, max_position_embeddings=256, dropout=0.0,
)
TINY_QWEN2 = dict(
    model_type="qwen2", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
    tie_word_embeddings=False,
)
TINY_LLAMA = dict(  # SmolLM2's layout in small: grouped KV heads, tied embeddings
    model_type="llama", hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
    tie_word_embeddings=True,
)
SMALL_LORA = dict(rank=4, alpha=8, dropout=0.0)


def tiny_lm(finetune="full", hf_config=TINY_OPT, attention="sofa", **kwargs) -> SofaCausalLM:
    lora_conf = SMALL_LORA if finetune != "full" else None
    return SofaCausalLM(VOCAB, hf_config=hf_config, attention=attention, finetune=finetune, lora_conf=lora_conf, **kwargs)


def train_steps(lm: SofaCausalLM, steps: int = 2) -> None:
    optimizer = torch.optim.Adam([p for p in lm.parameters() if p.requires_grad], lr=1e-2)
    tokens = torch.randint(1, VOCAB - 1, (2, 10), generator=torch.Generator().manual_seed(0))
    for _ in range(steps):
        logits, _ = lm(tokens[:, :-1], None)
        loss = torch.nn.functional.cross_entropy(logits.transpose(1, 2), tokens[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()


@pytest.mark.parametrize("hf_config", [TINY_OPT, TINY_QWEN2, TINY_LLAMA], ids=["opt", "qwen2", "llama"])
@pytest.mark.parametrize("finetune, attention", [("full", "sofa"), ("lora", "softmax"), ("full", "gated"), ("full", "clipped")])
def test_cached_batch_scores_equal_full_recompute(hf_config, finetune, attention):
    # clipped: alpha = 1 keeps most weights of 9 keys unclipped (its T is the 256 positions).
    attention_conf = {"alpha": 1.0} if attention == "clipped" else None
    lm = tiny_lm(finetune, hf_config, attention, attention_conf=attention_conf).eval()
    prefixes = torch.randint(1, VOCAB - 1, (3, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = lm(prefixes, None)[0].log_softmax(dim=-1)
        states = [None] * 3
        for length in range(1, prefixes.size(1) + 1):
            cached, states = lm.batch_score(prefixes[:, :length], states, None)
            torch.testing.assert_close(cached, full[:, length - 1], rtol=0, atol=1e-5)
    # score() on one prefix agrees too (its state covers all but the new token).
    with torch.no_grad():
        state = None
        for length in range(1, 6):
            single, state = lm.score(prefixes[0, :length], state, None)
            torch.testing.assert_close(single, full[0, length - 1], rtol=0, atol=1e-5)
    assert len(state.cache.layers) == hf_config["num_hidden_layers"]
    assert state.cache.layers[0].keys.shape[:3] == (1, hf_config.get("num_key_value_heads", hf_config["num_attention_heads"]), 5)


def test_vocabulary_is_redrawn_with_pretrained_statistics(tmp_path):
    base = OPTForCausalLM(OPTConfig(**{k: v for k, v in TINY_OPT.items() if k != "model_type"}, vocab_size=300))
    with torch.no_grad():
        base.get_input_embeddings().weight.mul_(5.0).add_(2.0)
    base.save_pretrained(tmp_path / "opt")
    lm = SofaCausalLM(VOCAB, pretrained=str(tmp_path / "opt"), attention="softmax")
    embedding = lm.model.get_input_embeddings().weight
    assert embedding.shape == (VOCAB, 32)
    assert lm.model.get_output_embeddings().weight is embedding  # OPT ties its head
    old = base.get_input_embeddings().weight
    assert abs(embedding.mean().item() - old.mean().item()) < 0.5
    assert abs(embedding.std().item() / old.std().item() - 1) < 0.3
    # The transformer blocks keep the pretrained weights.
    torch.testing.assert_close(
        lm.model.model.decoder.layers[1].fc1.weight, base.model.decoder.layers[1].fc1.weight, rtol=0, atol=0
    )
    assert lm.model.config.pad_token_id == 0 and lm.model.config.eos_token_id == VOCAB - 1


def test_pretrained_qwen2_with_untied_head(tmp_path):
    config = Qwen2Config(**{k: v for k, v in TINY_QWEN2.items() if k != "model_type"}, vocab_size=300)
    Qwen2ForCausalLM(config).save_pretrained(tmp_path / "qwen2")
    lm = SofaCausalLM(VOCAB, pretrained=str(tmp_path / "qwen2"), attention="softmax", finetune="lora", lora_conf=SMALL_LORA)
    head = lm.model.get_output_embeddings().weight
    assert head.shape == (VOCAB, 32) and head is not lm.model.get_input_embeddings().weight
    assert head.requires_grad  # the new vocabulary layers train in adapter modes


def test_pretrained_llama_with_tied_head_gets_default_lora_targets(tmp_path):
    config = LlamaConfig(**{k: v for k, v in TINY_LLAMA.items() if k != "model_type"}, vocab_size=300)
    base = LlamaForCausalLM(config)
    base.save_pretrained(tmp_path / "llama")
    lm = SofaCausalLM(VOCAB, pretrained=str(tmp_path / "llama"), attention="sofa", finetune="lora", lora_conf=SMALL_LORA)
    embedding = lm.model.get_input_embeddings().weight
    assert embedding.shape == (VOCAB, 32) and lm.model.get_output_embeddings().weight is embedding
    assert embedding.requires_grad
    adapted = {n.split(".lora_A")[0].rsplit(".", 1)[-1] for n, _ in lm.named_parameters() if ".lora_A" in n}
    assert adapted == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    frozen = dict(lm.model.named_parameters())["base_model.model.model.layers.1.mlp.down_proj.base_layer.weight"]
    assert not frozen.requires_grad and torch.equal(frozen, base.model.layers[1].mlp.down_proj.weight)
    train_steps(lm, steps=1)
    assert lm.model.get_output_embeddings().weight is lm.model.get_input_embeddings().weight


@pytest.mark.parametrize("attention", ["sofa", "gated"])
def test_lora_leaves_base_weights_bit_identical(attention):
    lm = tiny_lm("lora", attention=attention)
    frozen = {n: p.detach().clone() for n, p in lm.named_parameters() if not p.requires_grad}
    trained = {n: p.detach().clone() for n, p in lm.named_parameters() if p.requires_grad}
    assert any("lora_A" in n for n in trained) and any("embed_tokens" in n for n in trained)
    assert any("fc1.base_layer" in n for n in frozen) and any("q_proj.base_layer" in n for n in frozen)
    train_steps(lm)
    for name, before in frozen.items():
        assert torch.equal(dict(lm.named_parameters())[name], before), name
    changed = [n for n, p in lm.named_parameters() if p.requires_grad and not torch.equal(p, trained[n])]
    assert any("lora_B" in n for n in changed)
    # New attention weights (the gates of `gated`) train like the vocabulary layers.
    assert all(p.requires_grad for n, p in lm.named_parameters() if "gate" in n)
    assert (attention == "gated") == any("gate" in n for n in changed)


def test_adapter_checkpoint_holds_only_trainable_weights_and_reloads():
    lm = tiny_lm("lora")
    train_steps(lm, steps=1)
    state = lm.state_dict()
    assert set(state) == {n for n, p in lm.named_parameters() if p.requires_grad}
    fresh = tiny_lm("lora")
    fresh.load_state_dict(state, strict=True)  # frozen base comes from the seeded build
    tokens = torch.randint(1, VOCAB - 1, (2, 7))
    torch.testing.assert_close(fresh.eval()(tokens, None)[0], lm.eval()(tokens, None)[0], rtol=0, atol=0)


def test_full_checkpoint_into_lora_model_is_refused():
    with pytest.raises(ValueError, match="another finetune mode"):
        tiny_lm("lora").load_state_dict(tiny_lm("full").state_dict(), strict=False)


def test_qlora_trains_a_step_on_cpu():
    import bitsandbytes as bnb

    lm = tiny_lm("qlora", attention="sofa").to("cpu")  # placing the model quantizes its base, as ESPnet does
    quantized = [m for m in lm.modules() if isinstance(m, bnb.nn.Linear8bitLt)]
    assert len(quantized) == 2 * 6  # q, k, v, out, fc1, fc2 per layer
    assert all(m.weight.dtype == torch.int8 and not m.weight.requires_grad for m in quantized)
    int8_before = [m.weight.detach().clone() for m in quantized]
    lora_b_before = {n: p.detach().clone() for n, p in lm.named_parameters() if "lora_B" in n}
    train_steps(lm, steps=1)
    assert all(torch.equal(m.weight, w) for m, w in zip(quantized, int8_before))
    params = dict(lm.named_parameters())
    assert all(torch.isfinite(p).all() for p in params.values())
    assert any(not torch.equal(params[n], before) for n, before in lora_b_before.items())


def test_voxtlm_loss_counts_only_targets_after_generate_token():
    tokens = ["<blank>", "<unk>", "<startofspeech>", "<startoftext>", "<generatespeech>", "<generatetext>", "a", "b", "<sos/eos>"]
    model = SofaSpeechLanguageModel(tiny_lm(), len(tokens), tokens, loss="voxtlm")
    # ASR line: <startofspeech> a a <generatetext> b b | textLM line: <generatetext> a (padded)
    text = torch.tensor([[2, 6, 6, 5, 7, 7], [5, 6, 0, 0, 0, 0]])
    inputs, targets, counted = model._inputs_and_targets(text, torch.tensor([6, 2]))
    assert inputs[:, 0].tolist() == [8, 8]
    assert targets[0].tolist() == [2, 6, 6, 5, 7, 7, 8] and targets[1, :3].tolist() == [5, 6, 8]
    assert counted.tolist() == [[False] * 4 + [True] * 3, [False, True, True] + [False] * 4]
    full = SofaSpeechLanguageModel(tiny_lm(), len(tokens), tokens, loss="full")
    assert full._inputs_and_targets(text, torch.tensor([6, 2]))[2].sum(dim=1).tolist() == [7, 3]
    loss, stats, weight = model(text, torch.tensor([6, 2]))
    assert weight.item() == 5 and 0 <= stats["acc"].item() <= 1 and loss.requires_grad


# ----- bad input stops before training with an error naming the problem -----
def test_missing_pretrained_directory():
    with pytest.raises(BackboneError, match="does-not-exist"):
        SofaCausalLM(VOCAB, pretrained="/tmp/does-not-exist/opt", attention="softmax")


def test_unsupported_architecture(tmp_path):
    GPT2LMHeadModel(GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=100)).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(BackboneError, match="'gpt2' is not supported"):
        SofaCausalLM(VOCAB, pretrained=str(tmp_path / "gpt2"), attention="softmax")
    with pytest.raises(BackboneError, match="'gpt2' is not supported"):
        SofaCausalLM(VOCAB, hf_config=dict(model_type="gpt2"), attention="softmax")


def test_unknown_lora_target_module():
    with pytest.raises(ValueError, match=r"\['query'\].*available: \['fc1', 'fc2', 'k_proj'"):
        SofaCausalLM(VOCAB, hf_config=TINY_OPT, attention="softmax", finetune="lora", lora_conf=dict(target_modules=["q_proj", "query"]))


def test_unregistered_attention_name():
    with pytest.raises(ValueError, match="'softmax2' is not a registered normalizer"):
        SofaCausalLM(VOCAB, hf_config=TINY_OPT, attention="softmax2")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(hf_config=TINY_OPT, finetune="adapters"), "finetune: 'adapters'"),
        (dict(), "exactly one of 'pretrained'"),
        (dict(hf_config=TINY_OPT, pretrained="facebook/opt-125m"), "exactly one of 'pretrained'"),
        (dict(hf_config=TINY_OPT, finetune="lora", lora_conf=dict(rank=4, lora_alpha=8)), r"unknown keys \['lora_alpha'\]"),
        (dict(hf_config={"hidden_size": 8}), "'model_type' is missing"),
    ],
)
def test_bad_lm_conf(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SofaCausalLM(VOCAB, **{"attention": "softmax", **kwargs})


@pytest.mark.parametrize("hf_config", [TINY_OPT, TINY_QWEN2], ids=["opt", "qwen2"])
@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_batch_longer_than_the_positions_is_refused_by_name(hf_config, finetune):
    lm = tiny_lm(finetune, dict(hf_config, max_position_embeddings=16))
    lm(torch.ones(2, 16, dtype=torch.long), None)  # exactly the positions: fine
    with pytest.raises(ValueError, match="batch of 17 tokens .* max_position_embeddings 16; .*limit_lm_text"):
        lm(torch.ones(2, 17, dtype=torch.long), None)
