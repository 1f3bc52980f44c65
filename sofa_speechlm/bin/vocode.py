"""Vocodes a units file (`uttid u1 u2 ...`) into OUTPUT_DIR/wav/<uttid>.wav and OUTPUT_DIR/wav.scp.

The vocoder is stage 2b's dir (--vocoder_dir, any kind: unit HiFi-GAN or unit-to-mel + pretrained
HiFi-GAN, loaded by `sofa_speechlm.vocoder.load_vocoder`) or a unit HiFi-GAN generator file
(--vocoder_file, with --vocoder_config when its config.json is not beside it).

Units are 50 Hz frames (a data dir's `units`). De-duplicated units (`units_dedup`) are expanded
by their run lengths with --durations (`units_dur`), or by the vocoder's duration predictor with
--deduplicated. Batched; logs the real-time factor (synthesis seconds / audio seconds) and writes it to OUTPUT_DIR/rtf.
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import soundfile
import torch

from sofa_speechlm.data import DataDirError, read_table, write_table
from sofa_speechlm.speech.units import expand_by_durations, read_units
from sofa_speechlm.vocoder.checkpoint import load_generator
from sofa_speechlm.vocoder.config import VocoderConfig, VocoderConfigError
from sofa_speechlm.vocoder.synthesis import UnitVocoder, load_vocoder, synthesize
from sofa_speechlm.bin import add_log_level, setup_logging


def get_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    vocoder = parser.add_mutually_exclusive_group(required=True)
    vocoder.add_argument("--vocoder_dir", help="stage 2b's vocoder dir (any kind)")
    vocoder.add_argument(
        "--vocoder_file", help="a unit HiFi-GAN generator checkpoint (published layout, or our checkpoint.pth)",
    )
    parser.add_argument(
        "--vocoder_config", default=None,
        help="config.json of --vocoder_file (default: the one stored in it, else config.json beside it)",
    )
    parser.add_argument("--units", required=True, help="units file: 'uttid u1 u2 ...' per line")
    parser.add_argument("--output_dir", required=True, help="writes wav/<uttid>.wav, wav.scp and rtf here")
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--deduplicated", action="store_true",
        help="units are de-duplicated (runs collapsed): expand them with the vocoder's duration predictor",
    )
    parser.add_argument("--durations", default=None, help="run lengths of de-duplicated --units (stage 2a's units_dur)")
    parser.add_argument("--utt2spk", default=None, help="speakers of a multi-speaker vocoder (names from its config's speakers)")
    parser.add_argument("--speaker_id", type=int, default=None, help="one speaker embedding index for every utterance")
    add_log_level(parser)
    return parser


def speaker_ids(args: argparse.Namespace, utt_ids: list[str], config: VocoderConfig) -> dict[str, int] | None:
    """Speaker embedding index per utterance from --speaker_id or --utt2spk (None: neither given)."""
    if args.speaker_id is not None:
        if not config.multispkr or not 0 <= args.speaker_id < config.num_speakers:
            count = config.num_speakers if config.multispkr else "no"
            raise VocoderConfigError(f"--speaker_id {args.speaker_id}: the vocoder has {count} speakers")
        return dict.fromkeys(utt_ids, args.speaker_id)
    if args.utt2spk is None:
        return None
    if not config.speakers:
        raise VocoderConfigError(f"{args.vocoder_dir or args.vocoder_file}: its config lists no speaker names for --utt2spk; use --speaker_id")
    utt2spk = read_table(args.utt2spk)
    index = {name: i for i, name in enumerate(config.speakers)}
    ids = {}
    for utt_id in utt_ids:
        speaker = utt2spk.get(utt_id)
        if speaker not in index:
            raise DataDirError(f"{args.utt2spk}: utterance {utt_id} has speaker {speaker}, unknown to the vocoder ({len(index)} speakers)")
        ids[utt_id] = index[speaker]
    return ids


def main(argv: list[str] | None = None) -> int:
    parser = get_parser()
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    if args.deduplicated and args.durations:
        parser.error("--deduplicated (predicted durations) and --durations (given durations) exclude each other")
    if args.vocoder_config and not args.vocoder_file:
        parser.error("--vocoder_config is the config of --vocoder_file (a --vocoder_dir holds its own)")
    output_dir = Path(args.output_dir)
    try:
        if args.vocoder_dir:
            vocoder = load_vocoder(args.vocoder_dir, args.device)
        else:
            vocoder = UnitVocoder(load_generator(args.vocoder_file, args.vocoder_config).to(args.device).remove_weight_norm())
        units = read_units(args.units, num_embeddings=vocoder.num_embeddings)
        if args.durations:
            units = expand_by_durations(units, args.durations)
        utterances = {utt_id: torch.tensor(ids, dtype=torch.long) for utt_id, ids in units.items()}
        rate = vocoder.sampling_rate
        if isinstance(vocoder, UnitVocoder):
            speakers = speaker_ids(args, list(utterances), vocoder.generator.config)
            outputs = synthesize(vocoder.generator, utterances, args.batch_size, speakers, args.deduplicated)
        else:
            unit_hifigan_only = [name for name in ("deduplicated", "utt2spk", "speaker_id") if getattr(args, name) not in (None, False)]
            if unit_hifigan_only:
                raise VocoderConfigError(f"--{unit_hifigan_only[0]}: only a unit HiFi-GAN vocoder supports it, {args.vocoder_dir} is another kind")
            outputs = vocoder.synthesize(utterances, args.batch_size)
        (output_dir / "wav").mkdir(parents=True, exist_ok=True)
        wav_scp, audio_seconds, started = {}, 0.0, time.perf_counter()
        synthesis_seconds = 0.0
        for count, (utt_id, audio) in enumerate(outputs, start=1):
            synthesis_seconds += time.perf_counter() - started
            path = (output_dir / "wav" / f"{utt_id}.wav").resolve()
            soundfile.write(path, audio, rate, subtype="PCM_16")
            wav_scp[utt_id] = str(path)
            audio_seconds += len(audio) / rate
            if count % 100 == 0:
                logging.info("vocoded %d/%d utterances", count, len(utterances))
            started = time.perf_counter()
        write_table(output_dir / "wav.scp", wav_scp)
    except (ValueError, FileNotFoundError) as error:  # DataDirError, VocoderConfigError included
        logging.error("%s", error)
        return 1
    rtf = synthesis_seconds / max(audio_seconds, 1e-9)
    (output_dir / "rtf").write_text(f"{rtf:.4f}\n")
    logging.info(
        "vocoded %d utterances, %.1f s of audio in %.1f s: real-time factor %.4f (%.1fx faster than real time)",
        len(wav_scp), audio_seconds, synthesis_seconds, rtf, 1 / max(rtf, 1e-9),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
