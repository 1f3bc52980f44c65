"""TTS scoring: units decoded from `<startoftext> text <generatespeech>`, vocoded, transcribed by
Whisper, CER against the prompt's text. Also the reference rows that put that CER in context:
Whisper on the ground-truth audio (the judge's own floor) and on the vocoder's resynthesis of
the ground-truth units (the best any LM can reach with this vocoder).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

import numpy as np
import soundfile as sf
import soxr
import torch

from sofa_speechlm.data.kaldi import write_table
from sofa_speechlm.eval.decoding import BatchDecoder
from sofa_speechlm.eval.prompts import PromptSet, hypothesis_units, prompt_text
from sofa_speechlm.eval.text import write_score_dir
from sofa_speechlm.eval.whisper import SAMPLING_RATE, Transcriber
from sofa_speechlm.text.tokenizer import JointTokenizer


def to_16k(audio: np.ndarray, sampling_rate: int) -> np.ndarray:
    """Whisper hears 16 kHz; vocoders may run at another rate (22.05 kHz for mel HiFi-GAN)."""
    audio = np.asarray(audio, dtype=np.float32)
    return audio if sampling_rate == SAMPLING_RATE else soxr.resample(audio, sampling_rate, SAMPLING_RATE).astype(np.float32)


def vocode(vocoder, units: dict[str, list[int]], batch_size: int = 8) -> dict[str, np.ndarray]:
    """16 kHz waveforms of the utterances that have units (the others are left out)."""
    tensors = {u: torch.tensor(ids, dtype=torch.long) for u, ids in units.items() if ids}
    return {u: to_16k(audio, vocoder.sampling_rate) for u, audio in vocoder.synthesize(tensors, batch_size=batch_size)}


def transcribe_and_score(
    whisper: Transcriber,
    utt_ids: list[str],
    references: list[str],
    audio: dict[str, np.ndarray],
    output_dir: Path,
    title: str,
    save_wavs: bool = True,
) -> dict:
    """Whisper transcripts of `audio` (missing audio: empty transcript), score_cer/ and score_wer/."""
    have = [u for u in utt_ids if u in audio]
    transcripts = dict(zip(have, whisper.transcribe([audio[u] for u in have]))) if have else {}
    hyps = [transcripts.get(u, "") for u in utt_ids]
    if save_wavs:
        for utt_id in have:
            (output_dir / "wav").mkdir(parents=True, exist_ok=True)
            sf.write(output_dir / "wav" / f"{utt_id}.wav", audio[utt_id], SAMPLING_RATE)
    write_table(output_dir / "transcript", dict(zip(utt_ids, hyps)))
    cer_counts = write_score_dir(output_dir / "score_cer", utt_ids, references, hyps, "char", title)
    wer_counts = write_score_dir(output_dir / "score_wer", utt_ids, references, hyps, "word", title)
    logging.info(f"{title}: CER {cer_counts.rate:.2f}% WER {wer_counts.rate:.2f}% on {len(utt_ids)} utterances "
                 f"(Whisper {whisper.name}; {output_dir / 'score_cer/result.txt'})")
    return {"cer": cer_counts.rate, "wer": wer_counts.rate}


def decode_units(
    decoder: BatchDecoder,
    tokenizer: JointTokenizer,
    prompts: PromptSet,
    num_units: int,
    output_dir: Path,
    beam_size: int,
    max_new_tokens: int,
) -> dict[str, list[int]]:
    """Generated 50 Hz units per utterance, written to output_dir/units (ESPnet units file)."""
    hypotheses = decoder.decode(prompts.prompts, beam_size, max_new_tokens)
    units = {u: hypothesis_units(tokenizer, h.tokens, num_units, u) for u, h in zip(prompts.utt_ids, hypotheses)}
    empty = [u for u, ids in units.items() if not ids]
    if empty:
        logging.warning(f"TTS: {len(empty)} of {len(units)} utterances got no units (first: {empty[0]}); "
                        "their transcripts are empty, so every reference character counts as deleted")
    write_table(output_dir / "units", {u: " ".join(map(str, ids)) for u, ids in units.items()})
    write_table(output_dir / "score", {u: f"{h.score:.4f}" for u, h in zip(prompts.utt_ids, hypotheses)})
    return units


def score_tts(decoder, tokenizer, prompts: PromptSet, vocoder, whisper: Transcriber, output_dir, beam_size: int,
              max_new_tokens: int) -> dict:
    """Units -> vocoder -> Whisper -> CER (in %) against the prompts' text."""
    output_dir = Path(output_dir)
    units = decode_units(decoder, tokenizer, prompts, vocoder.num_embeddings, output_dir, beam_size, max_new_tokens)
    audio = vocode(vocoder, units)
    references = [prompt_text(p) for p in prompts.prompt_texts]
    result = transcribe_and_score(whisper, prompts.utt_ids, references, audio, output_dir, "tts test")
    return {**result, "empty_hypotheses": sum(not ids for ids in units.values())}


def reference_audio(kind: str, data_dir, utt_ids: Iterable[str], vocoder=None) -> dict[str, np.ndarray]:
    """16 kHz audio of the reference rows: `ground_truth` (the data dir's wavs) or
    `resynthesis` (the vocoder on the data dir's ground-truth units)."""
    from sofa_speechlm.data.audio import iter_utterances
    from sofa_speechlm.speech.units import read_units

    utt_ids = list(utt_ids)
    if kind == "ground_truth":
        return dict(iter_utterances(data_dir, SAMPLING_RATE, utt_ids))
    if kind == "resynthesis":
        if vocoder is None:
            raise ValueError("the resynthesis reference needs a vocoder")
        table = read_units(data_dir, num_embeddings=vocoder.num_embeddings)
        units = {u: table[u] for u in utt_ids}
        return vocode(vocoder, units)
    raise ValueError(f"reference '{kind}': expected ground_truth or resynthesis")

