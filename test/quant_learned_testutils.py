"""Tiny random OPT (pre-LN, post-LN), Qwen2 and Llama causal LMs and helpers for the learned-PTQ tests."""
import torch
from transformers import LlamaConfig, LlamaForCausalLM, OPTConfig, OPTForCausalLM, Qwen2Config, Qwen2ForCausalLM

from sofa_speechlm.attention import apply_attention
from sofa_speechlm.quant.architectures import decoder_layers
from sofa_speechlm.quant.blockwise import _fold, _split_inputs, _targets_and_stats
from sofa_speechlm.quant.calibration import capture_layer_inputs
from sofa_speechlm.quant.core import prepare
from sofa_speechlm.quant.let import LayerTransform, layout_of

VOCAB = 96


def tiny_opt(pre_ln=True):
    torch.manual_seed(0)
    config = OPTConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, ffn_dim=128, num_attention_heads=4,
                       max_position_embeddings=64, word_embed_proj_dim=64, dropout=0.0, do_layer_norm_before=pre_ln)
    return _roughen(OPTForCausalLM(config).eval())


def tiny_qwen2():
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, intermediate_size=128,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    return _roughen(Qwen2ForCausalLM(config).eval())


def tiny_llama():
    """SmolLM2's layout in small: grouped KV heads, tied embeddings, no biases."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, intermediate_size=128,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=True)
    return _roughen(LlamaForCausalLM(config).eval())


@torch.no_grad()
def _roughen(model):
    """Random norm weights/biases and biases (fresh models have ones/zeros, which hide fold errors)."""
    generator = torch.Generator().manual_seed(1)
    for name, p in model.named_parameters():
        if "norm" in name or name.endswith("bias"):
            p.add_(0.3 * torch.randn(p.shape, generator=generator))
    return model


MODELS = {"opt": tiny_opt, "opt_post_ln": lambda: tiny_opt(pre_ln=False), "qwen2": tiny_qwen2, "llama": tiny_llama}


def model_with_attention(family, normalizer):
    return apply_attention(MODELS[family](), normalizer)


# SOFA OPTs (pre-LN and post-LN), a vanilla one (HF's own SDPA attention, as stage 4 leaves it)
# and a SOFA Qwen2 and Llama.
TINY_LMS = {"sofa": lambda: model_with_attention("opt", "sofa"),
            "sofa_post_ln": lambda: model_with_attention("opt_post_ln", "sofa"),
            "vanilla": tiny_opt,
            "qwen2_sofa": lambda: model_with_attention("qwen2", "sofa"),
            "llama_sofa": lambda: model_with_attention("llama", "sofa")}


def calibration(batches=4, length=32):
    return [torch.randint(0, VOCAB, (2, length), generator=torch.Generator().manual_seed(100 + i)) for i in range(batches)]


INPUT_IDS = torch.randint(0, VOCAB, (2, 24), generator=torch.Generator().manual_seed(7))


def relative_error(a, b):
    return float((a - b).detach().norm() / b.detach().norm())


@torch.no_grad()
def fold_random_transforms(model, config, *, affine, shift_heads):
    """Prepare ``model`` for ``config`` (quantizers off), then fold a randomly perturbed LET /
    affine transform (initialised from real calibration statistics) into every layer.
    Returns the largest relative change of any parameter (to show the fold is not trivial)."""
    prepare(model, config)
    layout = layout_of(model)
    hiddens, kwargs_list = _split_inputs(capture_layer_inputs(model, calibration(2), config.method))
    generator = torch.Generator().manual_seed(3)
    changed = 0.0
    for index, layer in enumerate(decoder_layers(model)):
        targets, stats = _targets_and_stats(layer, hiddens, kwargs_list, config.method, index)
        originals = {name: p.detach().clone() for name, p in layer.named_parameters()}
        transform = LayerTransform(layout, originals, stats, alpha=0.5, shift=True, shift_heads=shift_heads,
                                   affine_heads=affine, affine_query_key=affine and not layout.rotary)
        for p in transform.parameters():
            if p.numel():
                p.add_(0.1 * p.abs().mean() * torch.randn(p.shape, generator=generator))
        _fold(layer, transform(originals))
        changed = max(changed, max(relative_error(p, originals[n]) for n, p in layer.named_parameters()))
        hiddens = targets
    return changed
