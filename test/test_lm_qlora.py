"""QLoRA: the int8 base quantizes once, where the model is placed; its threshold; its logits; its
as-trained evaluation (stage 6 `--as_trained`)."""

import argparse
import random

import bitsandbytes as bnb
import pytest
import torch
import yaml

from sofa_speechlm.bin import evaluate, lm_export
from sofa_speechlm.eval.perplexity import perplexity
from sofa_speechlm.lm.causal_lm import SofaCausalLM
from sofa_speechlm.lm.experiment import AVERAGED_MODEL, LMExperiment
from sofa_speechlm.tasks.lm import SofaLMTask
from sofa_speechlm.text.bpe import train_sentencepiece, write_token_list
from sofa_speechlm.text.tokenizer import JointTokenizer
from sofa_speechlm.text.unit_chars import units_to_chars

VOCAB = 40
TINY_OPT = dict(
    model_type="opt", hidden_size=64, word_embed_proj_dim=64, num_hidden_layers=2,
    num_attention_heads=4, ffn_dim=128, max_position_embeddings=128, dropout=0.0,
)
TINY_LLAMA = dict(  # SmolLM2's layout in small: grouped KV heads, tied embeddings
    model_type="llama", hidden_size=64, intermediate_size=128, num_hidden_layers=2,
    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128, tie_word_embeddings=True,
)
SMALL_LORA = dict(rank=4, alpha=8, dropout=0.0)


def build(finetune: str, hf_config: dict = TINY_OPT, **kwargs) -> SofaCausalLM:
    """The same seeded model in `finetune` mode (the vocabulary re-draw uses the global seed)."""
    torch.manual_seed(0)
    return SofaCausalLM(VOCAB, hf_config=hf_config, attention="sofa", finetune=finetune, lora_conf=SMALL_LORA, **kwargs)


def int8_layers(lm):
    return {n: m for n, m in lm.named_modules() if isinstance(m, bnb.nn.Linear8bitLt)}


def fp32_base_weights(lm):
    """name of the int8 layer -> the fp32 weight of the same layer in a lora model."""
    return {n: m.weight for n, m in lm.named_modules() if n.endswith(".base_layer")}


def dequantized(layer) -> torch.Tensor:
    codes = layer.weight.data if layer.state.CB is None else layer.state.CB
    scales = layer.weight.SCB if layer.state.SCB is None else layer.state.SCB
    return codes.float() * scales.float().unsqueeze(1) / 127.0


def assert_within_int8_rounding(layer, weight: torch.Tensor, name: str) -> None:
    half = weight.half().float()  # bitsandbytes quantizes the fp16 weight, per output row
    step = half.abs().amax(dim=1, keepdim=True) / 127.0
    error = (dequantized(layer) - half).abs()
    assert (error <= 0.5 * step * (1 + 1e-3) + 1e-7).all(), f"{name}: max error {error.max():.3g}, step {step.max():.3g}"


def test_int8_base_quantizes_once_where_the_model_is_placed():
    lm, fp32 = build("qlora"), build("lora")
    layers = int8_layers(lm)
    assert len(layers) == 2 * 6  # q, k, v, out, fc1, fc2 per layer
    assert all(m.weight.dtype == torch.float32 for m in layers.values())  # not yet placed: not yet quantized
    reference = fp32_base_weights(fp32)
    assert set(reference) == set(layers)
    for placement in range(2):  # as ESPnet does (model.to(dtype=..., device=...)), and once more
        lm.to(dtype=torch.float32, device="cpu")
        for name, layer in layers.items():
            assert layer.weight.dtype == torch.int8 and not layer.weight.requires_grad
            assert_within_int8_rounding(layer, reference[name], f"{name} after placement {placement + 1}")
    tokens = torch.randint(1, VOCAB - 1, (2, 9), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = lm.eval()(tokens, None)[0]
        # A move to another device gives every tensor new storage; bitsandbytes' int8 statistics
        # (plain attributes) must follow the moved weight rather than stay behind.
        lm._apply(lambda t: t.clone())
        for name, layer in layers.items():
            assert layer.state.CB.data_ptr() == layer.weight.data_ptr(), name
            assert_within_int8_rounding(layer, reference[name], f"{name} after a move")
        assert torch.equal(lm(tokens, None)[0], before)


def test_a_model_never_placed_quantizes_in_its_first_forward():
    lm, fp32 = build("qlora"), build("lora")
    with torch.no_grad():
        lm.eval()(torch.tensor([[1, 2, 3]]), None)
    reference = fp32_base_weights(fp32)
    for name, layer in int8_layers(lm).items():
        assert layer.weight.dtype == torch.int8
        assert_within_int8_rounding(layer, reference[name], name)


@pytest.mark.parametrize("threshold", [None, 0.0, 3.5])
def test_the_outlier_threshold_reaches_every_int8_layer(threshold):
    lm = build("qlora", **({} if threshold is None else {"qlora_threshold": threshold}))
    expected = 6.0 if threshold is None else threshold
    wrappers = [m for m in lm.modules() if type(m).__module__ == "peft.tuners.lora.bnb"]
    assert len(wrappers) == 12  # PEFT wraps them as int8 layers (merging dequantizes)
    assert [m.state.threshold for m in int8_layers(lm).values()] == [expected] * 12


def test_bad_thresholds_are_refused():
    with pytest.raises(ValueError, match="qlora_threshold: expected a number >= 0"):
        build("qlora", qlora_threshold=-1.0)
    with pytest.raises(ValueError, match="qlora_threshold: set for finetune 'lora'"):
        build("lora", qlora_threshold=6.0)


@pytest.mark.parametrize("hf_config", [TINY_OPT, TINY_LLAMA], ids=["opt", "llama"])
@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_int8_logits_are_close_to_fp32_logits(threshold, hf_config):
    # LoRA B starts at zero, so both compute their base: int8 vs fp32 weights.
    lm, fp32 = build("qlora", hf_config, qlora_threshold=threshold).to("cpu").eval(), build("lora", hf_config).eval()
    assert int8_layers(lm), "no int8 layer"
    tokens = torch.randint(1, VOCAB - 1, (3, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        int8, reference = lm(tokens, None)[0], fp32(tokens, None)[0]
    error = (int8 - reference).abs().max()
    assert 0 < error < 0.03 * reference.abs().max(), (float(error), float(reference.abs().max()))
    agree = (int8.argmax(-1) == reference.argmax(-1)).float().mean()
    assert agree > 0.9, float(agree)


WORDS = "the a cat dog sat ran on mat big red".split()


def lm_text_line(rng, index):
    text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 6)))
    units = units_to_chars(rng.randint(0, 15) for _ in range(rng.randint(5, 10)))
    return [f"<generatetext> {text}", f"<generatespeech> {units}"][index % 2]


def test_as_trained_qlora_scores_as_the_model_that_trained(tmp_path):
    rng = random.Random(0)
    (tmp_path / "train.txt").write_text("".join(f"u{i:03d} {lm_text_line(rng, i)}\n" for i in range(60)), encoding="utf-8")
    bpemodel = train_sentencepiece(tmp_path / "train.txt", tmp_path / "bpe", nbpe=40)
    tokens = write_token_list(bpemodel, tmp_path / "tokens.txt")
    lm_conf = dict(hf_config=TINY_OPT, attention="sofa", finetune="qlora", qlora_threshold=0.0, lora_conf=SMALL_LORA)
    config = dict(lm="sofa_opt", lm_conf=lm_conf, model="sofa_lm", model_conf=dict(loss="voxtlm"), token_list=tokens,
                  bpemodel=str(bpemodel), token_type="bpe", init=None)
    model = SofaLMTask.build_model(argparse.Namespace(**config)).to("cpu")
    tokenizer = JointTokenizer(str(bpemodel), tokens)
    test_dir = tmp_path / "lm_text"
    test_dir.mkdir()
    lines = [lm_text_line(rng, 2 * i) for i in range(6)]
    (test_dir / "textlm.txt").write_text("".join(f"t{i} {line}\n" for i, line in enumerate(lines)), encoding="utf-8")
    ids = [tokenizer.pieces_to_ids(tokenizer.tokenize(line)) for line in lines]
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = torch.nn.utils.rnn.pad_sequence([torch.tensor(i) for i in ids], batch_first=True)
    for _ in range(2):
        optimizer.zero_grad()
        model(batch, torch.tensor([len(i) for i in ids]))[0].backward()
        optimizer.step()
    trained = perplexity(model.lm.model.get_base_model().eval(), ids, tokens)

    exp = tmp_path / "exp/lm_qlora"
    exp.mkdir(parents=True)
    (exp / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
    torch.save(model.state_dict(), exp / AVERAGED_MODEL)
    loaded, _ = LMExperiment.find_as_trained(exp).load("cpu")
    assert len(int8_layers(loaded)) == 12 and all(m.weight.dtype == torch.int8 for m in int8_layers(loaded).values())
    assert perplexity(loaded, ids, tokens).ppl == trained.ppl

    evaluate.main(["--exp_dir", str(exp), "--fp", "false", "--as_trained", "true", "--eval_sets", "textlm",
                   "--lm_text_dir", str(test_dir), "--latency", "false", "--log_level", "WARNING"])
    scores = yaml.safe_load((exp / "eval/as_trained/scores.json").read_text(encoding="utf-8"))
    assert (scores["variant"], scores["finetune"], scores["method"]) == ("as_trained", "qlora", "llm_int8_t0")
    assert scores["metrics"]["text_ppl"] == pytest.approx(trained.ppl, rel=1e-6)
    # The merged export (stage 4) puts the adapters on the fp32 base: close to, not equal to, the int8 model.
    lm_export.main(["--train_config", str(exp / "config.yaml"), "--model_file", str(exp / AVERAGED_MODEL),
                    "--output_dir", str(exp / "merged")])
    merged, _ = LMExperiment.find(exp).load("cpu")
    assert not int8_layers(merged)
    assert LMExperiment.find(exp).finetune == "qlora"  # as trained: the merged config says full
    evaluate.main(["--exp_dir", str(exp), "--eval_sets", "textlm", "--lm_text_dir", str(test_dir), "--latency", "false",
                   "--log_level", "WARNING"])
    assert yaml.safe_load((exp / "eval/fp/scores.json").read_text(encoding="utf-8"))["finetune"] == "qlora"
    batch = torch.tensor([[len(tokens) - 1] + ids[0]])
    with torch.no_grad():
        merged_logits, int8_logits = merged(input_ids=batch).logits, loaded(input_ids=batch).logits
    error = (merged_logits - int8_logits).abs().max()
    assert 0 < error < 0.03 * merged_logits.abs().max(), float(error)
    with pytest.raises(ValueError, match="finetune 'full' has no adapters"):
        config["lm_conf"] = dict(hf_config=TINY_OPT, attention="sofa", finetune="full")
        (exp / "config.yaml").write_text(yaml.safe_dump(config, allow_unicode=True), encoding="utf-8")
        LMExperiment.find_as_trained(exp)
