"""ESPnet model (loss) around the SpeechLM: VoxtLM multitask loss or whole-sequence CE.

Every sequence is fed as `<sos/eos> t1 ... tn` and predicts `t1 ... tn <sos/eos>`.
With `loss: voxtlm` only the targets after the first task generate token
(`<generatetext>` / `<generatespeech>`) count, i.e. the ASR transcript, the TTS units, or the
continuation of a textLM / speechLM line; a line without a generate token counts whole.
With `loss: full` every target counts. Perplexity (`nll`) counts the same targets.
"""

from typing import Dict, List, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from typeguard import typechecked

from espnet2.lm.abs_model import AbsLM
from espnet2.torch_utils.device_funcs import force_gatherable
from espnet2.train.abs_espnet_model import AbsESPnetModel

from sofa_speechlm.text.bpe import SOS_EOS
from sofa_speechlm.text.templates import GENERATE_SPEECH, GENERATE_TEXT

LOSS_TYPES = ("voxtlm", "full")
GENERATE_TOKENS = (GENERATE_TEXT, GENERATE_SPEECH)


class SofaSpeechLanguageModel(AbsESPnetModel):
    """Next-token loss and accuracy of an AbsLM over the joint vocabulary."""

    @typechecked
    def __init__(
        self,
        lm: AbsLM,
        vocab_size: int,
        token_list: Union[Tuple[str, ...], List[str]],
        loss: str = "voxtlm",
        generate_tokens: Sequence[str] = GENERATE_TOKENS,
        ignore_id: int = 0,
    ):
        super().__init__()
        if loss not in LOSS_TYPES:
            raise ValueError(f"model_conf.loss: '{loss}' is not one of {LOSS_TYPES}")
        if token_list[-1] != SOS_EOS:
            raise ValueError(
                f"token_list: the last token must be '{SOS_EOS}' (ESPnet convention), got '{token_list[-1]}'"
            )
        generate_ids = []
        if loss == "voxtlm":
            missing = [t for t in generate_tokens if t not in token_list]
            if missing:
                raise ValueError(
                    f"token_list: the VoxtLM loss needs the generate tokens {missing}, "
                    "which the token list lacks (is it the stage 3 joint token list?)"
                )
            generate_ids = [token_list.index(t) for t in generate_tokens]
        self.lm = lm
        self.sos_eos = vocab_size - 1
        self.ignore_id = ignore_id
        self.loss_type = loss
        self.register_buffer("generate_ids", torch.tensor(generate_ids, dtype=torch.long), persistent=False)

    def _inputs_and_targets(
        self, text: torch.Tensor, text_lengths: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Inputs `<sos> text`, targets `text <eos>`, and the mask of targets that count."""
        text = text[:, : text_lengths.max()]
        inputs = F.pad(text, [1, 0], value=self.sos_eos)
        targets = F.pad(text, [0, 1], value=self.ignore_id)
        positions = torch.arange(targets.size(1), device=text.device)
        targets[positions.unsqueeze(0) == text_lengths.unsqueeze(1)] = self.sos_eos
        counted = positions.unsqueeze(0) <= text_lengths.unsqueeze(1)
        if self.loss_type == "voxtlm":
            is_generate = torch.isin(targets, self.generate_ids) & counted
            has_generate = is_generate.any(dim=1, keepdim=True)
            # Targets after the first generate token: its cumulative count is already >= 1.
            after_generate = (is_generate.long().cumsum(dim=1) - is_generate.long()) > 0
            counted = counted & (after_generate | ~has_generate)
        return inputs, targets, counted

    def _masked_nll(self, text: torch.Tensor, text_lengths: torch.Tensor):
        """NLL per target (0 where not counted), the count mask, logits and targets."""
        inputs, targets, counted = self._inputs_and_targets(text, text_lengths)
        logits, _ = self.lm(inputs, None)
        nll = F.cross_entropy(logits.transpose(1, 2).float(), targets, reduction="none")
        return nll * counted, counted, logits, targets

    def nll(self, text: torch.Tensor, text_lengths: torch.Tensor, **kwargs) -> Tuple[torch.Tensor, torch.Tensor]:
        """Per-target negative log-likelihood (batch, length) and counted targets per sequence."""
        nll, counted, _, _ = self._masked_nll(text, text_lengths)
        return nll, counted.sum(dim=1)

    def forward(
        self, text: torch.Tensor, text_lengths: torch.Tensor, **kwargs
    ) -> Tuple[torch.Tensor, Dict[str, torch.Tensor], torch.Tensor]:
        nll, counted, logits, targets = self._masked_nll(text, text_lengths)
        ntokens = counted.sum()
        loss = nll.sum() / ntokens.clamp(min=1)
        correct = ((logits.argmax(dim=-1) == targets) & counted).sum()
        stats = dict(loss=loss.detach(), acc=correct.float() / ntokens.clamp(min=1))
        return force_gatherable((loss, stats, ntokens), loss.device)

    def collect_feats(self, text: torch.Tensor, text_lengths: torch.Tensor, **kwargs) -> Dict[str, torch.Tensor]:
        return {}
