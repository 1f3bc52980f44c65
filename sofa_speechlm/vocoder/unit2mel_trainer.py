"""Training of the unit-to-mel model on (wav, units) data dirs: regression on log-mel targets.

Targets are the pretrained vocoder's own features of the training audio (peak-normalized,
resampled to its rate), computed once at the start. Resumable from OUTDIR/checkpoint.pth;
OUTDIR/unit2mel.pth + config.json are what synthesis loads; OUTDIR/loss.png shows the curve.
"""

from __future__ import annotations

import json
import logging
import random
import time
from pathlib import Path

import numpy as np
import torch
import torchaudio

from sofa_speechlm.data import DataDir, DataDirError, iter_utterances
from sofa_speechlm.vocoder.config import VocoderConfigError
from sofa_speechlm.vocoder.dataset import frame_tolerance
from sofa_speechlm.vocoder.mel import PEAK, LogMelExtractor
from sofa_speechlm.vocoder.unit2mel import Unit2Mel, Unit2MelConfig, masked_mel_loss
from sofa_speechlm.speech.units import parse_units

CHECKPOINT_NAME = "checkpoint.pth"
MODEL_NAME = "unit2mel.pth"
CONFIG_NAME = "config.json"


def load_examples(data_dirs: list[str | Path], config: Unit2MelConfig) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(units, log-mel target [num_mels, mel_frames(len(units))]) per utterance of the data dirs."""
    extractor = LogMelExtractor(config.convention)
    examples, seen = [], set()
    for path in data_dirs:
        data_dir = DataDir(path)
        table = data_dir.units
        if table is None:
            raise DataDirError(f"{data_dir.path}: no units file (stage 2a writes it)")
        wanted = [utt_id for utt_id in table if utt_id not in seen]
        seen.update(wanted)
        for utt_id, wav in iter_utterances(data_dir, config.unit_sampling_rate, wanted):
            units = torch.tensor(parse_units(table[utt_id], f"{data_dir.path / 'units'}: utterance {utt_id}", config.num_embeddings))
            audio_frames = len(wav) // config.code_hop_size
            if abs(audio_frames - len(units)) > frame_tolerance(audio_frames):
                raise DataDirError(
                    f"{data_dir.path / 'units'}: utterance {utt_id} has {len(units)} units but its audio holds "
                    f"{audio_frames} frames of {config.code_hop_size} samples at {config.unit_sampling_rate} Hz"
                )
            units = units[: min(audio_frames, len(units))]
            audio = torch.from_numpy(wav[: len(units) * config.code_hop_size].astype(np.float32))
            audio = audio * (PEAK / max(float(audio.abs().max()), 1e-5))
            audio = torchaudio.functional.resample(audio, config.unit_sampling_rate, config.sampling_rate)
            with torch.no_grad():
                mel = extractor(audio[None])[0]
            frames = config.mel_frames(len(units))
            if mel.size(-1) < frames:  # resampling may round a frame away
                mel = torch.cat([mel, mel[:, -1:].expand(-1, frames - mel.size(-1))], dim=-1)
            examples.append((units, mel[:, :frames]))
    if not examples:
        raise DataDirError(f"no utterances with units in {[str(p) for p in data_dirs]}")
    logging.info("unit-to-mel data: %d utterances from %d data dirs", len(examples), len(data_dirs))
    return examples


def collate(examples: list[tuple[torch.Tensor, torch.Tensor]], config: Unit2MelConfig):
    """Pads a batch; utterances longer than max_frames units are cut to a random window."""
    units, mels = [], []
    for unit_seq, mel in examples:
        if len(unit_seq) > config.max_frames:
            start = random.randint(0, len(unit_seq) - config.max_frames)
            unit_seq = unit_seq[start : start + config.max_frames]
            first = config.mel_frames(start)
            mel = mel[:, first : first + config.mel_frames(config.max_frames)]
        units.append(unit_seq)
        mels.append(mel)
    lengths = torch.tensor([len(u) for u in units])
    padded_units = torch.zeros(len(units), int(lengths.max()), dtype=torch.long)
    frames = max(m.size(-1) for m in mels)
    padded_mels = torch.zeros(len(mels), config.num_mels, frames)
    for row, (unit_seq, mel) in enumerate(zip(units, mels)):
        padded_units[row, : len(unit_seq)] = unit_seq
        padded_mels[row, :, : mel.size(-1)] = mel
    return padded_units, lengths, padded_mels


class Unit2MelTrainer:
    def __init__(self, config: Unit2MelConfig, outdir: str | Path, device: str = "cpu"):
        self.config = config
        self.outdir = Path(outdir)
        self.device = torch.device(device)
        torch.manual_seed(config.seed)
        random.seed(config.seed)
        self.model = Unit2Mel(config).to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), config.learning_rate, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.OneCycleLR(
            self.optimizer, config.learning_rate, total_steps=max(config.max_steps, 1), pct_start=0.1
        )
        self.step = 0
        self.history: list[dict[str, float]] = []

    def save(self) -> None:
        """checkpoint.pth (to resume), then unit2mel.pth + config.json (what synthesis loads), each atomically."""
        self.outdir.mkdir(parents=True, exist_ok=True)
        state = {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "step": self.step, "history": self.history,
            "config": self.config.to_dict(),
        }
        for name, value in ((CHECKPOINT_NAME, state), (MODEL_NAME, {"model": state["model"], "config": state["config"]})):
            tmp = self.outdir / f"{name}.tmp"
            torch.save(value, tmp)
            tmp.replace(self.outdir / name)
        (self.outdir / CONFIG_NAME).write_text(json.dumps(self.config.to_dict(), indent=2) + "\n", encoding="utf-8")
        self.plot_losses()

    def resume(self) -> bool:
        path = self.outdir / CHECKPOINT_NAME
        if not path.is_file():
            return False
        state = torch.load(path, map_location=self.device, weights_only=True)
        saved = Unit2MelConfig.from_dict(state["config"], source=str(path))
        if saved.model_dict() != self.config.model_dict():
            changed = [key for key, value in self.config.model_dict().items() if saved.model_dict()[key] != value]
            raise VocoderConfigError(f"{path}: was trained with other model settings ({changed}); use a new outdir")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.history = state["step"], state["history"]
        logging.info("resumed from %s at step %d", path, self.step)
        return True

    def train_step(self, units: torch.Tensor, lengths: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        self.model.train()
        predicted, frame_lengths = self.model(units.to(self.device), lengths.to(self.device))
        losses = masked_mel_loss(predicted, target.to(self.device), frame_lengths)
        if not torch.isfinite(losses["loss"]):
            raise FloatingPointError(f"unit-to-mel loss is {losses['loss'].item()} at step {self.step}")
        self.optimizer.zero_grad()
        losses["loss"].backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.optimizer.step()
        if self.step + 1 < self.config.max_steps:
            self.scheduler.step()
        return {name: value.item() for name, value in losses.items()}

    def train(self, data_dirs: list[str | Path]) -> None:
        config = self.config
        examples = load_examples(data_dirs, config)
        started, order = time.perf_counter(), []
        while self.step < config.max_steps:
            if len(order) < config.batch_size:
                order += random.sample(range(len(examples)), len(examples))
            batch, order = order[: config.batch_size], order[config.batch_size :]
            losses = self.train_step(*collate([examples[i] for i in batch], config))
            self.step += 1
            if self.step % config.log_interval == 0 or self.step == config.max_steps:
                self.history.append({"step": self.step, **losses})
                logging.info(
                    "step %d/%d: loss=%.4f l1=%.4f l2=%.4f (%.2f s/step)", self.step, config.max_steps,
                    losses["loss"], losses["l1"], losses["l2"], (time.perf_counter() - started) / self.step,
                )
            if self.step % config.checkpoint_interval == 0:
                self.save()
        self.save()
        logging.info("unit-to-mel training done: %d steps in %.1f s -> %s", self.step, time.perf_counter() - started, self.outdir)

    def plot_losses(self) -> None:
        if not self.history:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axis = plt.subplots(figsize=(5, 3.2))
        for name in ("l1", "l2"):
            axis.plot([e["step"] for e in self.history], [e[name] for e in self.history], label=f"log-mel {name.upper()}")
        axis.set_xlabel("step")
        axis.set_yscale("log")  # the first steps' loss is tens of times the final one
        axis.legend()
        figure.tight_layout()
        figure.savefig(self.outdir / "loss.png", dpi=100)
        plt.close(figure)
