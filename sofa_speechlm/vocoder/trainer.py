"""GAN training of the unit vocoder: resumable, with tensorboard scalars/audio and a loss-curve PNG.

One step: generate a batch of segments, update MPD+MSD on LSGAN real/fake, then update the
generator on adversarial + 2 x feature matching + 45 x log-mel L1 (+ duration loss). AdamW with
betas (adam_b1, adam_b2) for both; learning rates decay by lr_decay after every epoch.
"""

from __future__ import annotations

import logging
import random
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from sofa_speechlm.vocoder.checkpoint import save_published
from sofa_speechlm.vocoder.config import VocoderConfig, VocoderConfigError
from sofa_speechlm.vocoder.dataset import UnitWaveformDataset
from sofa_speechlm.vocoder.discriminators import MultiPeriodDiscriminator, MultiScaleDiscriminator
from sofa_speechlm.vocoder.generator import CodeHiFiGANGenerator
from sofa_speechlm.vocoder.losses import (
    FEATURE_MATCHING_WEIGHT,
    MEL_WEIGHT,
    LogMel,
    adversarial_loss,
    discriminator_loss,
    feature_matching_loss,
)

CHECKPOINT_NAME = "checkpoint.pth"
GENERATOR_NAME = "generator.pth"
SAMPLE_SECONDS = 4.0


class VocoderTrainer:
    """Owns the models, optimizers and the experiment dir; `train()` runs until config.max_steps."""

    def __init__(self, config: VocoderConfig, outdir: str | Path, device: str = "cpu"):
        self.config = config
        self.outdir = Path(outdir)
        self.device = torch.device(device)
        self.generator = CodeHiFiGANGenerator(config).to(self.device)
        self.mpd = MultiPeriodDiscriminator(config.discriminator_scale).to(self.device)
        self.msd = MultiScaleDiscriminator(config.discriminator_scale).to(self.device)
        self.log_mel = LogMel(config).to(self.device)
        betas = (config.adam_b1, config.adam_b2)
        self.optim_g = torch.optim.AdamW(self.generator.parameters(), config.learning_rate, betas=betas)
        self.optim_d = torch.optim.AdamW(
            list(self.mpd.parameters()) + list(self.msd.parameters()), config.learning_rate, betas=betas
        )
        self.sched_g = torch.optim.lr_scheduler.ExponentialLR(self.optim_g, gamma=config.lr_decay)
        self.sched_d = torch.optim.lr_scheduler.ExponentialLR(self.optim_d, gamma=config.lr_decay)
        self.step = 0
        self.epoch = 0
        self.history: list[dict[str, float]] = []

    # --- checkpoints -------------------------------------------------------------------
    def state_dict(self) -> dict:
        return {
            "generator": self.generator.state_dict(),
            "mpd": self.mpd.state_dict(),
            "msd": self.msd.state_dict(),
            "optim_g": self.optim_g.state_dict(),
            "optim_d": self.optim_d.state_dict(),
            "sched_g": self.sched_g.state_dict(),
            "sched_d": self.sched_d.state_dict(),
            "step": self.step,
            "epoch": self.epoch,
            "history": self.history,
            "config": self.config.to_dict(),
        }

    def save(self) -> Path:
        """Atomically writes checkpoint.pth (everything to resume) and generator.pth + config.json."""
        self.outdir.mkdir(parents=True, exist_ok=True)
        path = self.outdir / CHECKPOINT_NAME
        tmp = path.with_name(path.name + ".tmp")
        torch.save(self.state_dict(), tmp)
        tmp.replace(path)
        save_published(self.generator, self.outdir / GENERATOR_NAME)
        self.plot_losses()
        return path

    def resume(self) -> bool:
        """Loads outdir/checkpoint.pth when it exists; the config must describe the same generator."""
        path = self.outdir / CHECKPOINT_NAME
        if not path.is_file():
            return False
        state = torch.load(path, map_location=self.device, weights_only=True)
        saved = VocoderConfig.from_dict(state["config"], source=str(path))
        if saved.generator_dict() != self.config.generator_dict():
            changed = [k for k, v in self.config.generator_dict().items() if saved.generator_dict()[k] != v]
            raise VocoderConfigError(f"{path}: was trained with other generator settings ({changed}); use a new outdir")
        self.generator.load_state_dict(state["generator"])
        self.mpd.load_state_dict(state["mpd"])
        self.msd.load_state_dict(state["msd"])
        self.optim_g.load_state_dict(state["optim_g"])
        self.optim_d.load_state_dict(state["optim_d"])
        self.sched_g.load_state_dict(state["sched_g"])
        self.sched_d.load_state_dict(state["sched_d"])
        self.step, self.epoch, self.history = state["step"], state["epoch"], state["history"]
        logging.info("resumed from %s at step %d (epoch %d)", path, self.step, self.epoch)
        return True

    # --- training ----------------------------------------------------------------------
    def train_step(self, wav: torch.Tensor, units: torch.Tensor, speakers: torch.Tensor | None) -> dict[str, float]:
        self.generator.train()
        wav, units = wav.to(self.device), units.to(self.device)
        speakers = speakers.to(self.device) if self.config.multispkr else None
        fake = self.generator(units, speakers)

        self.optim_d.zero_grad()
        loss_d = sum(discriminator_loss(*disc(wav, fake.detach())[:2]) for disc in (self.mpd, self.msd))
        loss_d.backward()
        self.optim_d.step()

        self.optim_g.zero_grad()
        mel_l1 = F.l1_loss(self.log_mel(fake), self.log_mel(wav))
        adversarial = torch.zeros((), device=self.device)
        matching = torch.zeros((), device=self.device)
        for disc in (self.mpd, self.msd):
            _, fake_logits, real_maps, fake_maps = disc(wav, fake)
            adversarial = adversarial + adversarial_loss(fake_logits)
            matching = matching + feature_matching_loss(real_maps, fake_maps)
        loss_g = adversarial + FEATURE_MATCHING_WEIGHT * matching + MEL_WEIGHT * mel_l1
        losses = {}
        if self.generator.dur_predictor is not None:
            duration = self.generator.duration_loss(units)
            loss_g = loss_g + self.config.duration_loss_weight * duration
            losses["duration"] = duration.item()
        loss_g.backward()
        self.optim_g.step()
        self.step += 1
        losses.update(
            generator=loss_g.item(), discriminator=loss_d.item(), mel_l1=mel_l1.item(),
            adversarial=adversarial.item(), feature_matching=matching.item(),
        )
        return losses

    def train(self, data_dirs: list[str | Path]) -> None:
        from torch.utils.tensorboard import SummaryWriter  # only training needs tensorboard

        config = self.config
        dataset = UnitWaveformDataset(data_dirs, config)
        batch_size = min(config.batch_size, len(dataset))
        random.seed(config.seed + self.step)
        torch.manual_seed(config.seed + self.step)
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=True, num_workers=config.num_workers)
        writer = SummaryWriter(str(self.outdir / "tensorboard"))
        if self.step == 0:
            self.log_samples(writer, dataset, reference=True)
        started, start_step = time.perf_counter(), self.step
        interval: dict[str, list[float]] = {}  # losses since the last log line, averaged there
        while self.step < config.max_steps:
            for wav, units, speakers in loader:
                for name, value in self.train_step(wav, units, speakers).items():
                    interval.setdefault(name, []).append(value)
                if self.step % config.log_interval == 0 or self.step == config.max_steps:
                    means = {name: sum(values) / len(values) for name, values in interval.items()}
                    self.log_losses(writer, means, (time.perf_counter() - started) / (self.step - start_step))
                    interval = {}
                if self.step % config.summary_interval == 0:
                    self.log_samples(writer, dataset)
                if self.step % config.checkpoint_interval == 0 and self.step < config.max_steps:
                    self.save()
                if self.step >= config.max_steps:
                    break
            else:
                self.epoch += 1
                self.sched_g.step()
                self.sched_d.step()
        self.log_samples(writer, dataset)
        writer.close()
        logging.info("finished %d steps; saved %s", self.step, self.save())

    # --- reporting ---------------------------------------------------------------------
    def log_losses(self, writer, losses: dict[str, float], seconds_per_step: float) -> None:
        """Mean losses over the last log_interval steps: history (loss.png), tensorboard, log line."""
        self.history.append({"step": self.step, **losses})
        for name, value in losses.items():
            writer.add_scalar(f"loss/{name}", value, self.step)
        writer.add_scalar("learning_rate", self.optim_g.param_groups[0]["lr"], self.step)
        logging.info(
            "step %d/%d epoch %d: %s (%.2f s/step)", self.step, self.config.max_steps, self.epoch,
            " ".join(f"{k}={v:.3f}" for k, v in losses.items()), seconds_per_step,
        )

    @torch.no_grad()
    def log_samples(self, writer, dataset: UnitWaveformDataset, reference: bool = False, count: int = 2) -> None:
        """Vocodes the first utterances (up to SAMPLE_SECONDS) into tensorboard; `reference` logs the real audio."""
        self.generator.eval()
        frames = int(SAMPLE_SECONDS * self.config.sampling_rate / self.config.code_hop_size)
        rate = self.config.sampling_rate
        for index in range(min(count, len(dataset))):
            wav, units = dataset.aligned(index)
            utt_id = dataset.utterances[index].utt_id
            if reference:
                writer.add_audio(f"reference/{utt_id}", torch.from_numpy(wav[: frames * self.config.code_hop_size]), 0, rate)
                continue
            speakers = torch.tensor([dataset.utterances[index].speaker], device=self.device) if self.config.multispkr else None
            audio = self.generator(units[:frames].unsqueeze(0).to(self.device), speakers)[0].cpu()
            writer.add_audio(f"generated/{utt_id}", audio, self.step, rate)

    def plot_losses(self) -> None:
        if not self.history:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        steps = [entry["step"] for entry in self.history]
        names = [name for name in ("mel_l1", "generator", "discriminator", "duration") if name in self.history[0]]
        figure, axes = plt.subplots(1, len(names), figsize=(4 * len(names), 3.2))
        for axis, name in zip(axes, names):
            axis.plot(steps, [entry[name] for entry in self.history])
            axis.set_title(name)
            axis.set_xlabel("step")
        figure.tight_layout()
        figure.savefig(self.outdir / "loss.png", dpi=100)
        plt.close(figure)
