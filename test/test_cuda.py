"""Checks that need a CUDA GPU (skipped without one): SOFA attention on CUDA against the eager
reference, the QLoRA int8 base quantized on the GPU, and one ESPnet training step with ngpu 1."""

import argparse

import pytest
import torch
import yaml

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CUDA = "cuda"
# dtype -> max error of the fast path against eager, relative to the reference's magnitude (>= 1).
# As on the CPU (test_attention_fast.py); fp32 allows for the CUDA kernel's other summation order.
TOLERANCE = {torch.float32: 1e-4, torch.bfloat16: 6e-2, torch.float16: 8e-3}
VOCAB = 40
TINY_OPT = dict(
    model_type="opt", hidden_size=64, word_embed_proj_dim=64, num_hidden_layers=2,
    num_attention_heads=4, ffn_dim=128, max_position_embeddings=128, dropout=0.0,
)
SMALL_LORA = dict(rank=4, alpha=8, dropout=0.0)


def qkv(seed, q_len=70, k_len=70, dtype=torch.float32, batch=2, heads=3, dim=16):
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, heads, n, dim, generator=gen).to(CUDA, dtype) for n in (q_len, k_len, k_len)]


def outputs_and_grads(q, k, v, impl, **kwargs):
    from sofa_speechlm.attention import attend

    inputs = [t.clone().requires_grad_() for t in (q, k, v)]
    out = attend(*inputs, impl=impl, **kwargs)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(7)).to(out.device, out.dtype)
    return [out, *torch.autograd.grad((out.float() * grad_out.float()).sum(), inputs)]


def assert_fast_matches_eager(q, k, v, tolerance, **kwargs):
    fast = outputs_and_grads(q, k, v, "auto", **kwargs)
    eager = outputs_and_grads(q, k, v, "eager", **kwargs)
    for name, got, want in zip(("out", "dq", "dk", "dv"), fast, eager):
        assert got.device.type == CUDA and got.dtype == q.dtype, name
        assert torch.isfinite(got).all(), name
        error = ((got.float() - want.float()).abs().max() / want.float().abs().max().clamp_min(1.0)).item()
        assert error <= tolerance, f"{name}: {error}"
    return fast


def masks(q_len, k_len):
    """Boolean key padding, an HF-style additive float mask, and rows with no allowed key."""
    padding = torch.ones(2, 1, 1, k_len, dtype=torch.bool)
    padding[1, ..., k_len - 20:] = False
    allowed = torch.rand(2, 1, q_len, k_len, generator=torch.Generator().manual_seed(3)) > 0.4
    additive = torch.where(allowed, 0.0, torch.finfo(torch.float32).min)
    empty = torch.ones(2, 1, q_len, k_len, dtype=torch.bool)
    empty[0, :, 2] = False
    return {"none": None, "padding": padding.to(CUDA), "additive": additive.to(CUDA), "empty_rows": empty.to(CUDA)}


@pytest.mark.parametrize("normalizer", ["sofa", "softmax1", "softmax"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("q_len, k_len", [(70, 70), (5, 70), (70, 150)], ids=["square", "decode", "fewer_queries"])
@pytest.mark.parametrize("mask", ["none", "padding", "additive", "empty_rows"])
def test_attention_on_cuda_matches_eager(normalizer, dtype, causal, q_len, k_len, mask):
    q, k, v = qkv(0, q_len=q_len, k_len=k_len, dtype=dtype)
    attn_mask = masks(q_len, k_len)[mask]
    out, dq, _, _ = assert_fast_matches_eager(q, k, v, TOLERANCE[dtype], normalizer=normalizer, causal=causal,
                                              attn_mask=attn_mask)
    if mask == "empty_rows":  # a query with no allowed key outputs zeros and gets no gradient
        assert (out[0, :, 2] == 0).all() and (dq[0, :, 2] == 0).all()


def test_sofa_row_max_ties_on_cuda_match_eager_gradients():
    q, k, v = qkv(5, q_len=70, k_len=70)
    k[:, :, 40] = k[:, :, 12]
    q[:, :, 60] = k[:, :, 12] * 4  # query 60's max is tied over keys 12 and 40
    assert_fast_matches_eager(q, k, v, TOLERANCE[torch.float32], normalizer="sofa", causal=True)


def build(finetune, **kwargs):
    from sofa_speechlm.lm.causal_lm import SofaCausalLM

    torch.manual_seed(0)
    return SofaCausalLM(VOCAB, hf_config=TINY_OPT, attention="sofa", finetune=finetune, lora_conf=SMALL_LORA, **kwargs)


@pytest.mark.parametrize("threshold", [0.0, 6.0])
def test_qlora_quantizes_on_the_gpu_once_and_its_logits_follow_fp32(threshold):
    import bitsandbytes as bnb

    lm, fp32 = build("qlora", qlora_threshold=threshold), build("lora")
    reference = {n: m.weight.detach().clone() for n, m in fp32.named_modules() if n.endswith(".base_layer")}
    lm.to(dtype=torch.float32, device=CUDA)  # as ESPnet places the model
    lm.to(CUDA)  # placing it again must not quantize again
    layers = {n: m for n, m in lm.named_modules() if isinstance(m, bnb.nn.Linear8bitLt)}
    assert set(layers) == set(reference)
    tokens = torch.randint(1, VOCAB - 1, (3, 20), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        int8 = lm.eval()(tokens.to(CUDA), None)[0].float().cpu()
        expected = fp32.eval()(tokens, None)[0]
    for name, layer in layers.items():
        assert layer.weight.device.type == CUDA and layer.weight.dtype == torch.int8, name
        assert layer.state.CB.device.type == CUDA and layer.state.SCB.device.type == CUDA, name
        half = reference[name].half().float()
        step = half.abs().amax(dim=1, keepdim=True) / 127.0
        dequantized = layer.state.CB.float().cpu() * layer.state.SCB.float().cpu().unsqueeze(1) / 127.0
        assert ((dequantized - half).abs() <= 0.5 * step * (1 + 1e-3) + 1e-7).all(), name
        assert layer.state.threshold == threshold
    error = (int8 - expected).abs().max()
    assert 0 < error < 0.03 * expected.abs().max(), (float(error), float(expected.abs().max()))


def test_qlora_model_moved_between_devices_keeps_its_logits():
    lm = build("qlora").to(CUDA).eval()
    tokens = torch.randint(1, VOCAB - 1, (2, 12), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        on_gpu = lm(tokens.to(CUDA), None)[0].float().cpu()
        lm.to("cpu")  # the int8 codes and scales follow (SofaCausalLM._apply)
        on_cpu = lm(tokens, None)[0]
        lm.to(CUDA)
        again = lm(tokens.to(CUDA), None)[0].float().cpu()
    assert torch.equal(again, on_gpu)
    torch.testing.assert_close(on_cpu, on_gpu, rtol=0, atol=0.05 * on_gpu.abs().max().item())


@pytest.mark.parametrize("finetune", ["full", "qlora"])
def test_one_espnet_training_step_on_the_gpu(tmp_path, finetune):
    """ESPnet's trainer with --ngpu 1: build on the CPU, place on the GPU, one step, a finite loss."""
    import random

    from sofa_speechlm.bin import lm_train
    from sofa_speechlm.text.bpe import train_sentencepiece, write_token_list
    from sofa_speechlm.text.unit_chars import units_to_chars

    rng = random.Random(0)
    words = "the a cat dog sat ran on mat".split()
    lines = [f"<generatetext> {' '.join(rng.choice(words) for _ in range(5))}" if i % 2 else
             f"<generatespeech> {units_to_chars(rng.randint(0, 15) for _ in range(8))}" for i in range(40)]
    text = tmp_path / "train.txt"
    text.write_text("".join(f"utt{i:03d} {line}\n" for i, line in enumerate(lines)), encoding="utf-8")
    bpemodel = train_sentencepiece(text, tmp_path / "bpe", nbpe=40)
    write_token_list(bpemodel, tmp_path / "tokens.txt")
    lm_conf = dict(hf_config=TINY_OPT, attention="sofa", finetune=finetune)
    if finetune == "qlora":
        lm_conf.update(lora_conf=SMALL_LORA, qlora_threshold=6.0)
    config = dict(lm="sofa_opt", lm_conf=lm_conf, model="sofa_lm", model_conf=dict(loss="voxtlm"), optim="adam",
                  optim_conf=dict(lr=1e-3), batch_type="unsorted", batch_size=8, max_epoch=1, num_iters_per_epoch=1,
                  patience=None, num_att_plot=0, best_model_criterion=[["valid", "loss", "min"]])
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    common = ["--token_list", str(tmp_path / "tokens.txt"), "--bpemodel", str(bpemodel), "--token_type", "bpe",
              "--train_data_path_and_name_and_type", f"{text},text,text",
              "--valid_data_path_and_name_and_type", f"{text},text,text", "--num_workers", "0"]
    lm_train.main(common + ["--collect_stats", "true", "--ngpu", "0", "--output_dir", str(tmp_path / "stats"),
                            "--batch_type", "unsorted", "--batch_size", "8"])
    lm_train.main(common + ["--config", str(tmp_path / "config.yaml"), "--ngpu", "1", "--output_dir", str(tmp_path / "exp"),
                            "--train_shape_file", str(tmp_path / "stats/train/text_shape"),
                            "--valid_shape_file", str(tmp_path / "stats/valid/text_shape"),
                            "--use_tensorboard", "false", "--use_matplotlib", "false"])
    from sofa_speechlm.tasks.lm import SofaLMTask

    # The step happened and its gradients were finite (ESPnet skips the update on a non-finite
    # grad norm): weights moved from their seeded initial values, and all are finite.
    torch.manual_seed(0)  # ESPnet's --seed 0 before it builds the model: the same initial weights
    initial = SofaLMTask.build_model(argparse.Namespace(**yaml.safe_load((tmp_path / "exp/config.yaml").read_text())))
    initial = initial.state_dict()
    trained = torch.load(tmp_path / "exp/1epoch.pth", map_location="cpu")
    assert set(trained) == set(initial)
    assert all(torch.isfinite(value).all() for value in trained.values() if value.is_floating_point())
    moved = [name for name, value in trained.items() if not torch.equal(value, initial[name])]
    assert moved and all(finetune == "full" or "lora_" in n or "embed_tokens" in n for n in moved), moved[:5]
    assert finetune == "qlora" or any("layers.0.fc1" in n for n in moved)
    model, _ = SofaLMTask.build_model_from_file(tmp_path / "exp/config.yaml", tmp_path / "exp/1epoch.pth", CUDA)
    with torch.no_grad():
        logits = model.lm(torch.tensor([[3, 4, 5]], device=CUDA), None)[0]
    assert torch.isfinite(logits).all()
