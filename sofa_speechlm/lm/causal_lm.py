"""The SOFA SpeechLM as an ESPnet LM component (AbsLM): HF causal LM + attention + adapters.

Decoding keeps one KV cache for the live beam (lm/kv_cache.py), reordered to the surviving
hypotheses at each step, so each beam-search step feeds only the new token and the cache's
memory stays that of the live beam however many hypotheses have ended; ESPnet's
HuggingfaceOPTModel recomputes the whole prefix at every step.
"""

import logging
from typing import Any, List, Optional, Tuple

import torch
from typeguard import typechecked

from espnet2.lm.abs_model import AbsLM
from sofa_speechlm.lm.backbone import adapt_vocabulary, build_random, load_pretrained
from sofa_speechlm.lm.finetune import (
    DEFAULT_LORA_CONF,
    DEFAULT_QLORA_THRESHOLD,
    FINETUNE_MODES,
    add_lora,
    int8_state_follows_weight,
    quantize_base_int8,
)
from sofa_speechlm.lm.kv_cache import BeamCache, CacheRow

# The unmodified HF attention (SDPA) is the vanilla baseline; every other name is a
# normalizer of sofa_speechlm.attention.
VANILLA_ATTENTION = "softmax"
PAD_ID = 0  # ESPnet pads token ids with 0 (<blank>)

def check_attention_name(attention: str) -> None:
    """Fail early on an attention normalizer that sofa_speechlm.attention does not register."""
    if attention == VANILLA_ATTENTION:
        return
    from sofa_speechlm.attention import hf_normalizers

    if attention not in hf_normalizers():
        raise ValueError(
            f"lm_conf.attention: '{attention}' is not a registered normalizer; "
            f"expected one of {list(hf_normalizers())}"
        )


def _check_lora_conf(lora_conf: Optional[dict]) -> dict:
    unknown = sorted(set(lora_conf or {}) - set(DEFAULT_LORA_CONF))
    if unknown:
        raise ValueError(
            f"lm_conf.lora_conf: unknown keys {unknown}; expected some of {sorted(DEFAULT_LORA_CONF)}"
        )
    return {**DEFAULT_LORA_CONF, **(lora_conf or {})}


class SofaCausalLM(AbsLM):
    """A pretrained (or inline-config) OPT/Qwen2/Llama causal LM over the joint vocabulary.

    Args:
        vocab_size: size of the ESPnet token list (the last entry is <sos/eos>).
        pretrained: local HF directory, hub id or offline model name such as `smollm2`
            (give exactly one of this and `hf_config`).
        hf_config: inline HF config dict (with `model_type`) of a randomly initialised model.
        init_seed: seed of the random initialisation of an inline-config model.
        attention: `softmax` (HF's own SDPA, the vanilla baseline) or a normalizer of
            sofa_speechlm.attention (sofa, softmax1, sofa_l1, ...).
        attention_conf: options passed to `apply_attention`.
        finetune: `full`, `lora` or `qlora` (int8 frozen base + LoRA).
        lora_conf: rank, alpha, dropout, target_modules (default: attention and MLP linears).
        qlora_threshold: qlora's LLM.int8 outlier threshold (default 6.0; 0: no fp16 columns).
            The int8 base quantizes when the model is first moved to its device (ESPnet does).
        kv_cache: reuse keys/values across decoding steps (off only to check equivalence).
    """

    @typechecked
    def __init__(
        self,
        vocab_size: int,
        pretrained: Optional[str] = None,
        hf_config: Optional[dict] = None,
        init_seed: int = 0,
        attention: str = "sofa",
        attention_conf: Optional[dict] = None,
        finetune: str = "full",
        lora_conf: Optional[dict] = None,
        qlora_threshold: Optional[float] = None,
        kv_cache: bool = True,
    ):
        super().__init__()
        if finetune not in FINETUNE_MODES:
            raise ValueError(f"lm_conf.finetune: '{finetune}' is not one of {FINETUNE_MODES}")
        if bool(pretrained) == bool(hf_config):
            raise ValueError(
                "lm_conf: give exactly one of 'pretrained' (HF directory or hub id) and "
                f"'hf_config' (inline HF config); got pretrained={pretrained!r}, "
                f"hf_config={'set' if hf_config else None}"
            )
        if qlora_threshold is not None and finetune != "qlora":
            raise ValueError(f"lm_conf.qlora_threshold: set for finetune '{finetune}'; it applies to qlora only")
        check_attention_name(attention)
        lora_options = _check_lora_conf(lora_conf)

        model = load_pretrained(pretrained) if pretrained else build_random(hf_config, init_seed)
        pretrained_parameters = {id(p) for p in model.parameters()}
        if attention != VANILLA_ATTENTION:
            from sofa_speechlm.attention import apply_attention

            apply_attention(model, attention, **(attention_conf or {}))
        redrawn = adapt_vocabulary(model, vocab_size, pad_id=PAD_ID, sos_eos_id=vocab_size - 1)
        self.vocab_size = vocab_size
        self.finetune = finetune
        self.kv_cache = kv_cache
        if finetune != "full":
            # Besides the adapters only new weights train: the vocabulary layers re-drawn by
            # adapt_vocabulary and attention additions such as the gates of `gated`.
            new_parameters = redrawn + [p for p in model.parameters() if id(p) not in pretrained_parameters]
            new_ids = {id(p) for p in new_parameters}
            for parameter in model.parameters():
                parameter.requires_grad_(id(parameter) in new_ids)
            if finetune == "qlora":
                quantize_base_int8(model, DEFAULT_QLORA_THRESHOLD if qlora_threshold is None else qlora_threshold)
            target_modules = lora_options.pop("target_modules")
            model = add_lora(model, target_modules=target_modules, **lora_options)
            for parameter in new_parameters:
                parameter.requires_grad_(True)
            self.register_state_dict_post_hook(SofaCausalLM._keep_trainable_only)
            self.register_load_state_dict_post_hook(SofaCausalLM._allow_missing_frozen)
        self.model = model
        self.register_load_state_dict_pre_hook(SofaCausalLM._check_checkpoint_vocabulary)
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        total = sum(p.numel() for p in self.parameters())
        logging.info(f"SofaCausalLM ({finetune}): {trainable:,} of {total:,} parameters train")

    def _apply(self, fn, recurse=True):
        """Every .to()/.cuda() of the model: a qlora base's int8 statistics follow its moved weights."""
        super()._apply(fn, recurse)
        if self.finetune == "qlora":
            int8_state_follows_weight(self)
        return self

    # ----- checkpoints: adapter modes save and load only what trains -----
    def _trainable_names(self) -> set:
        return {name for name, p in self.named_parameters() if p.requires_grad}

    def _keep_trainable_only(self, state_dict, prefix, local_metadata) -> None:
        keep = {prefix + name for name in self._trainable_names()}
        for key in [k for k in state_dict if k.startswith(prefix) and k not in keep]:
            del state_dict[key]

    def _check_checkpoint_vocabulary(self, state_dict, prefix, *args) -> None:
        name = prefix + self._embedding_key()
        if name in state_dict and state_dict[name].size(0) != self.vocab_size:
            raise ValueError(
                f"the checkpoint's vocabulary has {state_dict[name].size(0)} tokens but the "
                f"token list has {self.vocab_size}: use the token list the model was trained with"
            )
        self._load_prefix = prefix

    def _allow_missing_frozen(self, incompatible_keys) -> None:
        prefix = self._load_prefix
        trainable = self._trainable_names()
        missing = incompatible_keys.missing_keys
        mine = [k for k in missing if k.startswith(prefix)]
        if trainable and all(prefix + name in mine for name in trainable):
            raise ValueError(
                f"the checkpoint holds none of the {self.finetune} weights (for example "
                f"'{prefix + sorted(trainable)[0]}'): was it trained with another finetune mode?"
            )
        for key in mine:
            if key[len(prefix):] not in trainable:
                missing.remove(key)

    def _embedding_key(self) -> str:
        embedding = self.model.get_input_embeddings()
        return next(n for n, m in self.named_modules() if m is embedding) + ".weight"

    # ----- training -----
    def forward(self, input: torch.Tensor, hidden: None) -> Tuple[torch.Tensor, None]:
        """Logits (batch, length, vocab) of right-padded token ids.

        No attention mask is needed: padding is on the right, so causal attention already
        keeps every real token from seeing it. A batch longer than the model's positions is
        refused here, not as an IndexError deep in the embedding (run.sh's limit_lm_text step
        drops or cuts such lines before training).
        """
        positions = getattr(self.model.config, "max_position_embeddings", None)
        if positions is not None and input.shape[1] > positions:
            raise ValueError(
                f"a batch of {input.shape[1]} tokens (<sos/eos> included) exceeds the LM's max_position_embeddings "
                f"{positions}; drop or cut the long LM text lines first: python -m sofa_speechlm.bin.limit_lm_text")
        return self.model(input_ids=input, use_cache=False).logits, None

    # ----- decoding (ESPnet scorer interface) -----
    def score(self, y: torch.Tensor, state: Optional[CacheRow], x: torch.Tensor) -> Tuple[torch.Tensor, Any]:
        """Log-probabilities of the next token after the 1-D prefix `y` (ESPnet's one-hypothesis
        BeamSearch): the hypothesis gets a cache of its own, so its siblings' states stay valid."""
        if state is not None:
            state = state.cache.copy_rows(state.cache.rows_of([state])).advance(1)[0]
        logp, states = self.batch_score(y.unsqueeze(0), [state], x)
        return logp[0], states[0]

    def batch_score(
        self, ys: torch.Tensor, states: List[Optional[CacheRow]], xs: torch.Tensor
    ) -> Tuple[torch.Tensor, List[Optional[CacheRow]]]:
        """Next-token log-probabilities (n_batch, vocab) of equally long prefixes `ys`.

        A state covers all but the last token of its prefix, so only the tokens after the
        cached part are fed. All states come from the previous call (or are None at the
        start): the beam's one cache is reordered to them, and the returned states are its rows.
        """
        if not self.kv_cache:
            logits = self.model(input_ids=ys, use_cache=False, logits_to_keep=1).logits
            return logits[:, -1].float().log_softmax(dim=-1), [None] * len(ys)
        if all(state is None for state in states):
            cache = BeamCache()
        elif any(state is None for state in states):
            raise ValueError("batch_score: states mix None (a new hypothesis) and cached hypotheses")
        else:
            cache = states[0].cache
            cache.select_rows(cache.rows_of(states))
        new_tokens = ys[:, cache.get_seq_length():]
        output = self.model(input_ids=new_tokens, past_key_values=cache, use_cache=True, logits_to_keep=1)
        logp = output.logits[:, -1].float().log_softmax(dim=-1)
        return logp, cache.advance(len(ys))
