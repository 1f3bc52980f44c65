"""Calibration statistics: a histogram of |input activation| per layer, per-channel weight ranges.

Two passes over the calibration audio through the feature reader (so that waveform
normalisation and chunking are those of unit extraction): the first finds max |x| per layer,
the second fills ``bins`` equal bins over [0, max] (exact counts, no re-binning)."""
from __future__ import annotations

import logging
from contextlib import contextmanager

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from .calibrators import Histogram

DEFAULT_BINS = 2048  # TensorRT's histogram calibrator


@contextmanager
def input_hooks(layers: dict[str, nn.Module], observe):
    """Calls ``observe(name, input tensor)`` before every forward of each layer."""
    handles = [module.register_forward_pre_hook(lambda module, args, name=name: observe(name, args[0].detach()))
               for name, module in layers.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def activation_histograms(reader, layers: dict[str, nn.Module], waveforms: list[np.ndarray], bins: int = DEFAULT_BINS) -> dict[str, Histogram]:
    """name -> histogram of |input| over all calibration waveforms."""
    amax = {name: 0.0 for name in layers}

    def track_max(name, x):
        amax[name] = max(amax[name], float(x.abs().max()))

    with input_hooks(layers, track_max):
        for waveform in tqdm(waveforms, desc="calibration ranges", mininterval=10):
            reader.extract(waveform)
    counts = {name: torch.zeros(bins, dtype=torch.float64) for name in layers}

    def count(name, x):
        if amax[name] > 0:
            counts[name] += torch.histc(x.abs().float().flatten(), bins=bins, min=0.0, max=amax[name]).double().cpu()

    with input_hooks(layers, count):
        for waveform in tqdm(waveforms, desc="calibration histograms", mininterval=10):
            reader.extract(waveform)
    logging.info("activation histograms of %d layers over %d calibration utterances (%d bins)", len(layers), len(waveforms), bins)
    return {name: Histogram(counts[name].numpy(), amax[name]) for name in layers}


def weight_channel_ranges(layers: dict[str, nn.Module]) -> dict[str, np.ndarray]:
    """name -> max |w| of each output channel (the per-channel weight scales times qmax)."""
    return {name: module.weight.detach().abs().reshape(module.weight.shape[0], -1).amax(dim=1).float().cpu().numpy()
            for name, module in layers.items()}
