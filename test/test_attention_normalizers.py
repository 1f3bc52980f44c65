"""Each attention normalizer against its written formula (float64, independent code), values and gradients."""
import pytest
import torch

from sofa_speechlm.attention import NORMALIZERS, attend, eager_attention, get_normalizer
from sofa_speechlm.attention.normalizers import attention_weights, resolve_options


def formula(name, scores, allowed, zeta=1.0, gamma=None, alpha=12.0, length=None):
    """The papers' formulas on rows of float64 scores; forbidden keys and empty rows give 0."""
    has_key = allowed.any(-1, keepdim=True)
    allowed = allowed | ~has_key  # an empty row is computed over all keys, then zeroed
    neg_inf = torch.tensor(float("-inf"), dtype=scores.dtype)
    masked = torch.where(allowed, scores, neg_inf)
    count = allowed.sum(-1, keepdim=True)

    def softmax1_of(x):  # exp(x_i) / (1 + sum_j exp(x_j)) = exp(x_i - log(1 + sum_j exp(x_j)))
        x = torch.where(allowed, x, neg_inf)
        return torch.exp(x - torch.logaddexp(torch.zeros_like(count, dtype=x.dtype), torch.logsumexp(x, -1, keepdim=True)))

    if name == "softmax":
        weights = torch.exp(masked - torch.logsumexp(masked, -1, keepdim=True))
    elif name == "sofa":
        shifted = masked - masked.max(-1, keepdim=True).values
        weights = torch.exp(shifted) / (1 + torch.exp(shifted).sum(-1, keepdim=True))
    elif name == "softmax1":
        weights = softmax1_of(scores)
    elif name == "sofa_l1":
        l1 = torch.where(allowed, scores.abs(), 0).sum(-1, keepdim=True)
        weights = softmax1_of(scores / l1)
    elif name == "sofa_meancenter":
        mean = torch.where(allowed, scores, 0).sum(-1, keepdim=True) / count
        weights = softmax1_of(scores - mean)
    elif name == "clipped":
        gamma = -alpha / (length or scores.shape[-1]) if gamma is None else gamma
        softmax = torch.exp(masked - torch.logsumexp(masked, -1, keepdim=True))
        weights = torch.clamp((zeta - gamma) * softmax + gamma, 0, 1)
    return torch.where(allowed & has_key, weights, 0.0)


def random_case(seed, batch=2, heads=3, q_len=9, k_len=9, dim=8):
    gen = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(batch, heads, n, dim, generator=gen) for n in (q_len, k_len, k_len))
    return q, k, v


def reference_attention(name, q, k, v, allowed, **options):
    scores = (q.double() @ k.double().transpose(-1, -2)) * q.shape[-1] ** -0.5
    return formula(name, scores, allowed.expand_as(scores), **options) @ v.double()


@pytest.mark.parametrize("name", NORMALIZERS)
def test_eager_matches_formula_values_and_gradients(name):
    q, k, v = random_case(0)
    padding = torch.ones(2, 1, 1, 9, dtype=torch.bool)
    padding[1, ..., :3] = False
    allowed = padding & torch.ones(9, 9, dtype=torch.bool).tril()
    options = {"alpha": 2.0} if name == "clipped" else {}  # alpha=12 over 9 keys would clip everything
    inputs = [t.clone().requires_grad_() for t in (q, k, v)]
    ours = attend(*inputs, normalizer=name, attn_mask=padding, impl="eager", **options)
    grad_out = torch.randn(ours.shape, generator=torch.Generator().manual_seed(1))
    ours_grads = torch.autograd.grad((ours * grad_out).sum(), inputs)

    ref_inputs = [t.double().requires_grad_() for t in (q, k, v)]
    ref = reference_attention(name, *ref_inputs, allowed, **options)
    ref_grads = torch.autograd.grad((ref * grad_out.double()).sum(), ref_inputs)

    assert (ours.double() - ref).abs().max() <= 1e-5
    for got, want in zip(ours_grads, ref_grads):
        assert (got.double() - want).abs().max() <= 1e-5


@pytest.mark.parametrize("name", NORMALIZERS)
@pytest.mark.parametrize("kind", ["huge", "constant", "ties", "single_key"])
def test_adversarial_scores_stay_finite_and_match_formula(name, kind):
    gen = torch.Generator().manual_seed(2)
    scores = torch.randn(4, 33, generator=gen)
    allowed = torch.ones(4, 33, dtype=torch.bool)
    if kind == "huge":
        scores = scores * 1e4
    elif kind == "constant":
        scores = torch.full((4, 33), 7.0)
    elif kind == "ties":
        scores[:, [3, 10, 20]] = scores.max() + 1
    else:
        allowed[:, 1:] = False
    weights = attention_weights(name, scores, allowed)
    assert torch.isfinite(weights).all()
    assert (weights.double() - formula(name, scores.double(), allowed)).abs().max() <= 1e-5


def test_sofa_rows_sum_between_half_and_one():
    q, k, v = random_case(3, q_len=40, k_len=40)
    _, weights = eager_attention(q * 30, k, v, normalizer="sofa")
    sums = weights.sum(-1)
    assert sums.min() >= 0.5 - 1e-6 and sums.max() < 1.0
    # the first query sees one key: exactly 1/2
    assert torch.allclose(sums[..., 0], torch.full_like(sums[..., 0], 0.5))


def test_sofa_gradient_flows_through_the_first_row_max():
    """The formula as written lets the gradient flow through max(S), to the first maximal key."""
    scores = torch.tensor([[1.0, 3.0, 3.0, 0.5]], requires_grad=True)
    allowed = torch.ones(1, 4, dtype=torch.bool)
    weights = attention_weights("sofa", scores, allowed)
    (grad,) = torch.autograd.grad(weights[0, 0], scores)
    # d/dm of exp(S0 - m)/(1 + sum exp(S - m)) = -w0 / (1 + sum exp(S - m)): only on key 1.
    unshifted = torch.exp(scores.detach() - 3.0)
    denominator = 1 + unshifted.sum()
    w0 = unshifted[0, 0] / denominator
    expected = torch.stack([w0 - w0**2, -w0 * unshifted[0, 1] / denominator - w0 / denominator,
                            -w0 * unshifted[0, 2] / denominator, -w0 * unshifted[0, 3] / denominator])
    assert torch.allclose(grad[0], expected, atol=1e-6)


def test_clipped_defaults_follow_bondarenko_opt_runs():
    options = resolve_options("clipped", {})
    assert options == {"zeta": 1.0, "gamma": None, "alpha": 12.0, "length": None}
    scores = torch.zeros(1, 24)
    weights = attention_weights("clipped", scores, torch.ones(1, 24, dtype=torch.bool))
    gamma = -12.0 / 24
    assert torch.allclose(weights, torch.full((1, 24), (1 - gamma) / 24 + gamma).clamp(0, 1))
    explicit = attention_weights("clipped", scores, torch.ones(1, 24, dtype=torch.bool), gamma=-0.01, zeta=1.2)
    assert torch.allclose(explicit, torch.full((1, 24), 1.21 / 24 - 0.01))


def test_clipped_with_a_fixed_length_ignores_the_key_count():
    """gamma = -alpha / length whatever the number of keys (padding, KV cache)."""
    scores = torch.randn(1, 40, generator=torch.Generator().manual_seed(3))
    allowed = torch.ones(1, 40, dtype=torch.bool)
    for keys in (40, 30):  # the first 30 keys alone: their softmax renormalises, gamma does not change
        fixed = attention_weights("clipped", scores[:, :keys], allowed[:, :keys], alpha=1.0, length=64)
        expected = formula("clipped", scores[:, :keys].double(), allowed[:, :keys], gamma=-1.0 / 64)
        assert torch.allclose(fixed.double(), expected, atol=1e-7) and (fixed > 0).any() and (fixed == 0).any()
    per_call = attention_weights("clipped", scores[:, :30], allowed[:, :30], alpha=1.0)
    assert not torch.allclose(fixed, per_call)
    with pytest.raises(ValueError, match="option 'length' of normalizer 'clipped' must be positive"):
        resolve_options("clipped", {"length": 0})


def test_unknown_normalizer_and_option_list_what_is_supported():
    with pytest.raises(ValueError, match="supported: softmax, sofa, softmax1, sofa_l1, sofa_meancenter, clipped"):
        get_normalizer("sparsemax")
    with pytest.raises(ValueError, match="accepted: zeta, gamma, alpha, length"):
        resolve_options("clipped", {"beta": 1.0})
    with pytest.raises(ValueError, match="accepted: none"):
        resolve_options("sofa", {"zeta": 1.0})
    with pytest.raises(ValueError, match="finite number"):
        resolve_options("clipped", {"alpha": float("nan")})
