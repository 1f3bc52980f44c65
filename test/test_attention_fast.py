"""The memory-efficient path (impl="auto") against the eager reference: dtypes, masks, extremes, errors."""
import pytest
import torch

from sofa_speechlm.attention import FLASH_NORMALIZERS, attend, eager_attention
from sofa_speechlm.attention import cpu_kernel, flash

# dtype -> max abs error allowed between fast and eager (outputs and gradients). The eager path
# computes in fp32 from the low-precision inputs; the kernels multiply in the input dtype.
TOLERANCE = {torch.float32: 1e-5, torch.bfloat16: 6e-2, torch.float16: 8e-3}


def qkv(seed, batch=2, heads=3, q_len=70, k_len=70, dim=16, dtype=torch.float32, scale=1.0):
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, heads, n, dim, generator=gen) * scale).to(dtype) for n in (q_len, k_len, k_len)]


def outputs_and_grads(q, k, v, impl, **kwargs):
    inputs = [t.clone().requires_grad_() for t in (q, k, v)]
    out = attend(*inputs, impl=impl, **kwargs)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(7)).to(out.dtype)
    grads = torch.autograd.grad((out.float() * grad_out.float()).sum(), inputs)
    return [out, *grads]


def assert_fast_matches_eager(q, k, v, tolerance=1e-5, **kwargs):
    fast = outputs_and_grads(q, k, v, "auto", **kwargs)
    eager = outputs_and_grads(q, k, v, "eager", **kwargs)
    for name, got, want in zip(("out", "dq", "dk", "dv"), fast, eager):
        assert torch.isfinite(got).all(), name
        # relative to the magnitude of the reference (gradients of sharp inputs reach ~10)
        error = ((got.float() - want.float()).abs().max() / want.float().abs().max().clamp_min(1.0)).item()
        assert error <= tolerance, f"{name}: {error}"
    return fast


@pytest.mark.parametrize("normalizer", FLASH_NORMALIZERS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("causal", [True, False])
def test_fast_matches_eager_per_dtype(normalizer, dtype, causal):
    q, k, v = qkv(0, dtype=dtype)
    fast = assert_fast_matches_eager(q, k, v, TOLERANCE[dtype], normalizer=normalizer, causal=causal)
    assert fast[0].dtype == dtype


def key_padding():
    mask = torch.ones(2, 1, 1, 70, dtype=torch.bool)
    mask[1, ..., 50:] = False
    return mask


def hf_additive():
    allowed = torch.rand(2, 1, 70, 70, generator=torch.Generator().manual_seed(3)) > 0.4
    return torch.where(allowed, 0.0, torch.finfo(torch.float32).min)


def with_empty_rows():
    mask = torch.ones(2, 1, 70, 70, dtype=torch.bool)
    mask[0, :, 5] = False
    mask[1, :, 60:] = False
    return mask


@pytest.mark.parametrize("normalizer", FLASH_NORMALIZERS)
@pytest.mark.parametrize(
    "mask_kind, causal", [("padding", True), ("padding", False), ("hf_additive", False), ("empty_rows", True)]
)
def test_masks(normalizer, mask_kind, causal):
    mask = {"padding": key_padding, "hf_additive": hf_additive, "empty_rows": with_empty_rows}[mask_kind]()
    q, k, v = qkv(1)
    out, dq, _, _ = assert_fast_matches_eager(q, k, v, normalizer=normalizer, causal=causal, attn_mask=mask)
    if mask_kind == "empty_rows":
        assert (out[0, :, 5] == 0).all() and (out[1, :, 60:] == 0).all()
        assert (dq[0, :, 5] == 0).all() and (dq[1, :, 60:] == 0).all()


def test_masked_keys_do_not_matter_and_bias_is_added():
    q, k, v = qkv(2)
    mask = key_padding()
    k2, v2 = k.clone(), v.clone()
    k2[1, :, 50:] += 100.0
    v2[1, :, 50:] = 1e6  # forbidden values must not leak in
    reference = attend(q, k, v, attn_mask=mask)
    assert torch.allclose(attend(q, k2, v2, attn_mask=mask), reference, atol=1e-6)
    # sofa (max-shifted) ignores a constant bias on the allowed keys; softmax1 does not
    bias = torch.where(mask, 0.5, float("-inf"))
    assert torch.allclose(attend(q, k, v, attn_mask=bias), reference, atol=1e-5)
    softmax1 = attend(q, k, v, attn_mask=mask, normalizer="softmax1")
    assert not torch.allclose(attend(q, k, v, attn_mask=bias, normalizer="softmax1"), softmax1, atol=1e-3)
    assert_fast_matches_eager(q, k, v, normalizer="sofa", attn_mask=torch.where(mask, torch.randn(70), float("-inf")))


@pytest.mark.parametrize("normalizer", FLASH_NORMALIZERS)
def test_a_float_mask_of_another_dtype_than_the_inputs(normalizer):
    q, k, v = qkv(17)
    bias = torch.where(key_padding(), torch.randn(70, generator=torch.Generator().manual_seed(18)), float("-inf"))
    out = assert_fast_matches_eager(q, k, v, normalizer=normalizer, causal=True, attn_mask=bias.double())[0]
    assert out.dtype == torch.float32


@pytest.mark.parametrize("normalizer", FLASH_NORMALIZERS)
def test_causal_with_fewer_queries_than_keys_is_aligned_to_the_end(normalizer):
    q, _, _ = qkv(3, q_len=5)
    _, k, v = qkv(4)
    assert_fast_matches_eager(q, k, v, normalizer=normalizer, causal=True)
    # the last query (a KV-cache decode step) sees every key
    last = attend(q[:, :, -1:], k, v, normalizer=normalizer, causal=True)
    assert torch.allclose(last, attend(q[:, :, -1:], k, v, normalizer=normalizer, causal=False), atol=1e-6)


@pytest.mark.parametrize("scale", [-0.5, 0.05])
def test_explicit_scale_including_negative(scale):  # a negative scale is served by the eager path
    q, k, v = qkv(11)
    assert_fast_matches_eager(q, k, v, normalizer="sofa", scale=scale)


def test_exact_ties_in_the_row_max_match_eager_gradients():
    q, k, v = qkv(5, dim=8)
    k[:, :, 40] = k[:, :, 12]
    k[:, :, 55] = k[:, :, 12]
    q[:, :, 60] = k[:, :, 12] * 4  # query 60's max is tied over keys 12, 40, 55
    assert_fast_matches_eager(q, k, v, normalizer="sofa", causal=True)


@pytest.fixture
def intra_op_threads(request):
    threads = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(threads)


@pytest.mark.parametrize("intra_op_threads", [1, 2], indirect=True)  # serial and worker-pool chunks
@pytest.mark.parametrize("causal", [True, False])
def test_row_max_chunking_and_blocks(monkeypatch, causal, intra_op_threads):
    # Chunks of 64 query rows over 200 / 256 keys exercise both the 64-key block search and
    # the plain fallback, and the merge of the left-of-diagonal and diagonal parts.
    monkeypatch.setattr(flash, "_CHUNK_ELEMENTS", 1)
    for length in (200, 256):
        q, k, v = qkv(6, batch=1, heads=2, q_len=length, k_len=length, dim=8, scale=2.0)
        row_max, argmax = flash._row_max(q.requires_grad_(), k, None, causal, 0.3)
        assert not row_max.requires_grad  # no graph recorded, not even on pool workers
        q = q.detach()
        scores = (q @ k.transpose(-1, -2)) * 0.3
        if causal:
            scores = scores.masked_fill(torch.ones(length, length, dtype=torch.bool).triu(1), float("-inf"))
        expected = scores.max(-1)
        assert torch.allclose(row_max, expected.values, atol=1e-5)
        assert torch.equal(argmax, expected.indices)
    assert_fast_matches_eager(q, k, v, normalizer="sofa", causal=causal)
    assert torch.get_num_threads() == intra_op_threads


def test_fused_cpu_kernel_builds_here():
    # Without it SOFA still works (the row-max pass below), only about 15% slower.
    assert cpu_kernel.load() is not None


def test_a_failed_kernel_build_falls_back_with_a_warning(monkeypatch, caplog):
    from torch.utils import cpp_extension

    def no_compiler(**kwargs):
        raise RuntimeError("Error building extension\nc++: command not found")

    monkeypatch.setattr(cpp_extension, "load", no_compiler)
    cpu_kernel.load.cache_clear()
    try:
        assert cpu_kernel.fused_forward(*qkv(15), None, True, 0.25) is None
    finally:
        cpu_kernel.load.cache_clear()
    assert "could not build the fused CPU attention kernel (c++: command not found)" in caplog.text


@pytest.fixture(params=["fused_kernel", "row_max_pass"])
def sofa_path(request, monkeypatch):
    """Small tiles so that short inputs cross many query and key tiles; or the fallback path."""
    if request.param == "fused_kernel":
        monkeypatch.setattr(cpu_kernel, "Q_BLOCK", 24)
        monkeypatch.setattr(cpu_kernel, "KV_BLOCK", 32)
    else:
        monkeypatch.setattr(flash, "fused_forward", lambda *args: None)
    return request.param


@pytest.mark.parametrize("causal", [True, False])
def test_sofa_across_tiles_with_masks_and_ties(sofa_path, causal):
    q, k, v = qkv(12, q_len=150, k_len=150, dim=16, scale=2.0)
    # Ties across key tiles: the first maximal key (12) must win over its copies (70, 140).
    k[:, :, 70] = k[:, :, 140] = k[:, :, 12]
    q[:, :, 145] = k[:, :, 12] * 4
    assert_fast_matches_eager(q, k, v, normalizer="sofa", causal=causal)
    # Key padding that forbids whole key tiles, a bias, and a row whose first tiles are all forbidden.
    allowed = torch.ones(2, 1, 150, 150, dtype=torch.bool)
    allowed[0, :, :, 30:100] = False
    allowed[1, :, 140, :120] = False
    bias = torch.where(allowed, torch.randn(150, generator=torch.Generator().manual_seed(13)), float("-inf"))
    assert_fast_matches_eager(q, k, v, normalizer="sofa", causal=causal, attn_mask=bias)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_sofa_low_precision_across_tiles(sofa_path, dtype):
    q, k, v = qkv(14, q_len=100, k_len=100, dtype=dtype)
    assert_fast_matches_eager(q, k, v, TOLERANCE[dtype], normalizer="sofa", causal=True)


@pytest.mark.parametrize("normalizer", FLASH_NORMALIZERS)
def test_huge_logits_stay_finite(normalizer):
    q, k, v = qkv(8, dim=16)
    q = q * (1e4 / (q @ k.transpose(-1, -2)).abs().max() * 16**0.5)  # scores of magnitude 1e4
    for impl in ("auto", "eager"):
        out = attend(q.requires_grad_(), k, v, normalizer=normalizer, impl=impl)
        (grad,) = torch.autograd.grad(out.sum(), q)
        assert torch.isfinite(out).all() and torch.isfinite(grad).all()


def test_nan_inputs_give_nan_gradients_not_errors(sofa_path):
    # Mixed-precision overflow makes NaN activations; trainers skip such steps, so no exception.
    q, k, v = qkv(16, q_len=100, k_len=100)
    q[0, 0, 3:] = float("nan")
    inputs = [t.requires_grad_() for t in (q, k, v)]
    out = attend(*inputs, normalizer="sofa", causal=True)
    grads = torch.autograd.grad(out.sum(), inputs)
    assert out[0, 0, 3:].isnan().all() and torch.isfinite(out[1]).all()
    assert grads[0][0, 0, 3:].isnan().all()


def test_sixteen_thousand_keys():
    q, k, v = qkv(9, batch=1, heads=2, q_len=8, k_len=16384, dim=16, scale=3.0)
    out = assert_fast_matches_eager(q, k, v, normalizer="sofa", causal=False)[0]
    _, weights = eager_attention(q, k, v, normalizer="sofa", causal=False)
    sums = weights.sum(-1)
    assert torch.isfinite(out).all() and sums.min() >= 0.5 and sums.max() < 1.0


def test_bad_inputs_name_what_is_expected():
    q, k, v = qkv(10)
    with pytest.raises(ValueError, match="supported: softmax, sofa, softmax1"):
        attend(q, k, v, normalizer="soft")
    with pytest.raises(ValueError, match=r"share batch and heads.*k \(2, 1, 70, 16\)"):
        attend(q, k[:, :1], v[:, :1])
    with pytest.raises(ValueError, match="head_dim"):
        attend(q, k[..., :8], v)
    with pytest.raises(ValueError, match=r"\[batch, heads, length, head_dim\]"):
        attend(q[0], k[0], v[0])
    with pytest.raises(ValueError, match=r"not broadcastable to \[batch, heads, q_len, k_len\] = \[2, 3, 70, 70\]"):
        attend(q, k, v, attn_mask=torch.ones(3, 70, dtype=torch.bool))
    with pytest.raises(TypeError, match="bool"):
        attend(q, k, v, attn_mask=torch.ones(70, 70, dtype=torch.long))
    with pytest.raises(ValueError, match="supported: auto, eager"):
        attend(q, k, v, impl="triton")
    with pytest.raises(ValueError, match="accepted: none"):
        attend(q, k, v, normalizer="sofa", alpha=3.0)
