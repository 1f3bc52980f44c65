"""The beam's KV cache (lm/kv_cache.py): same hypotheses as without a cache, memory bounded by
the live beam however many hypotheses end, stale states rejected."""

import gc

import pytest
import torch

from espnet.nets.beam_search import BeamSearch
from sofa_speechlm.lm.causal_lm import SofaCausalLM
from sofa_speechlm.lm.generate import PromptContinuation

VOCAB = 12  # few tokens: <sos/eos> wins often, so many hypotheses end during a long decode
TINY_OPT = dict(model_type="opt", hidden_size=64, word_embed_proj_dim=64, num_hidden_layers=2, num_attention_heads=2,
                ffn_dim=128, max_position_embeddings=512, dropout=0.0)
TOKENS = [f"t{i}" for i in range(VOCAB - 1)] + ["<sos/eos>"]


def tiny_lm(attention: str, seed: int = 0) -> SofaCausalLM:
    return SofaCausalLM(VOCAB, hf_config=TINY_OPT, init_seed=seed, attention=attention).eval()


def prompts(count: int = 3):
    g = torch.Generator().manual_seed(3)
    return [torch.randint(1, VOCAB - 1, (int(n),), generator=g).tolist() for n in torch.randint(2, 8, (count,), generator=g)]


@pytest.mark.parametrize("attention", ["sofa", "softmax"])
def test_beam_search_same_with_and_without_cache(attention):
    lm = tiny_lm(attention)
    results = {}
    for kv_cache in (True, False):
        lm.kv_cache = kv_cache
        # A length bonus keeps the untrained model's hypotheses from ending at once.
        search = PromptContinuation(lm, TOKENS, beam_size=5, max_new_tokens=25, length_bonus=2.0)
        results[kv_cache] = [search(prompt) for prompt in prompts()]
    assert [tokens for tokens, _ in results[True]] == [tokens for tokens, _ in results[False]]
    assert [score for _, score in results[True]] == pytest.approx([score for _, score in results[False]], abs=1e-4)
    assert any(len(tokens) > 20 for tokens, _ in results[True])  # it generated, not just <sos/eos>


@torch.no_grad()
def test_one_hypothesis_beam_search_same_with_and_without_cache():
    # ESPnet's BeamSearch scores hypothesis by hypothesis (lm.score): siblings share a parent's state.
    lm = tiny_lm("sofa", seed=1)
    x = torch.zeros(1, 1)
    results = {}
    for kv_cache in (True, False):
        lm.kv_cache = kv_cache
        search = BeamSearch(scorers=dict(lm=lm), weights=dict(lm=1.0), beam_size=3, vocab_size=VOCAB,
                            sos=VOCAB - 1, eos=VOCAB - 1, token_list=TOKENS, pre_beam_score_key="full")
        search.set_hyp_primer([VOCAB - 1, *prompts(1)[0]])
        results[kv_cache] = [(h.yseq.tolist(), float(h.score)) for h in search(x, maxlenratio=-12.0)]
    assert [y for y, _ in results[True]] == [y for y, _ in results[False]]
    assert [s for _, s in results[True]] == pytest.approx([s for _, s in results[False]], abs=1e-4)


@pytest.mark.parametrize("attention", ["sofa", "softmax"])
@torch.no_grad()
def test_reordered_cache_scores_equal_full_scoring_past_the_buffer_growth(attention):
    # 3 + 140 tokens: the buffers grow twice (past 67 and past 132 tokens).
    lm = tiny_lm(attention, seed=4)
    g = torch.Generator().manual_seed(5)
    ys = torch.randint(1, VOCAB - 1, (4, 3), generator=g)
    states = [None] * 4
    for step in range(140):
        cached, states = lm.batch_score(ys, states, None)
        if step % 10 == 0:
            full = lm(ys, None)[0][:, -1].log_softmax(dim=-1)
            torch.testing.assert_close(cached, full, rtol=0, atol=1e-5)
        order = torch.randint(0, 4, (4,), generator=g).tolist()  # a beam's reorder: repeats, drops
        ys = torch.cat([ys, torch.randint(1, VOCAB - 1, (4, 1), generator=g)], dim=1)[order]
        states = [states[i] for i in order]


def kv_bytes_alive(heads: int, head_dim: int) -> int:
    """Bytes of every live tensor storage shaped like keys/values [batch, heads, length, head_dim]."""
    storages = {}
    for obj in gc.get_objects():
        if isinstance(obj, torch.Tensor) and obj.dim() == 4 and obj.shape[1] == heads and obj.shape[3] == head_dim:
            storage = obj.untyped_storage()
            storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


@torch.no_grad()
def test_long_beam5_decode_keeps_only_the_live_beams_cache():
    lm = tiny_lm("sofa", seed=2)
    # <sos/eos> made likely: a few hypotheses end at every step while the beam runs on.
    eos_bias = torch.zeros(VOCAB)
    eos_bias[-1] = 1.0
    lm.model.lm_head.register_forward_hook(lambda module, inputs, logits: logits + eos_bias)
    heads = TINY_OPT["num_attention_heads"]
    head_dim = TINY_OPT["hidden_size"] // heads
    beam, new_tokens, prompt = 5, 160, [3, 4, 5]
    peaks = []
    score = lm.batch_score

    def measured_score(ys, states, xs):
        result = score(ys, states, xs)
        if ys.shape[1] % 20 == 0:  # gc scans are slow: sample every 20 steps
            peaks.append((ys.shape[1], kv_bytes_alive(heads, head_dim)))
        return result

    lm.batch_score = measured_score
    search = PromptContinuation(lm, TOKENS, beam_size=beam, max_new_tokens=new_tokens).search
    search.set_hyp_primer([VOCAB - 1, *prompt])
    ended = search(torch.zeros(1, 1), maxlenratio=-float(new_tokens))
    assert len(ended) > 300  # many hypotheses ended and kept their states
    assert len(peaks) >= 6
    # Bound: the live beam's keys and values at this length, with the buffers' growth room (a
    # quarter of the length, at least 64 tokens). States that were views of each step's batched
    # cache (the former design) broke it at length 20 already.
    for length, alive in peaks:
        live = beam * TINY_OPT["num_hidden_layers"] * 2 * heads * head_dim * 4
        bound = live * (length + max(64, length // 4))
        assert alive <= bound, f"{alive} bytes of KV tensors alive at length {length}, bound {bound}"


@torch.no_grad()
def test_a_stale_state_is_rejected():
    lm = tiny_lm("softmax")
    ys = torch.tensor([[VOCAB - 1, 3], [VOCAB - 1, 4]])
    _, first = lm.batch_score(ys, [None, None], None)
    _, second = lm.batch_score(torch.cat([ys, ys[:, -1:]], dim=1), first, None)
    with pytest.raises(RuntimeError, match="stale KV-cache state"):
        lm.batch_score(torch.cat([ys, ys[:, -1:]], dim=1), first, None)
    with pytest.raises(ValueError, match="mix None"):
        lm.batch_score(ys, [second[0], None], None)
