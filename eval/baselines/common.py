"""What every baseline HEAR module shares: options, input checks, long-audio windows, pooling, the HEAR functions.

A baseline is a :class:`BaselineModel` that implements ``encode(audio, layer)``: a batch of equally long clips
(at most ``window_samples`` long) -> frames (n, T, D) and their timestamps (T,) in ms from the chunk start.
:func:`get_timestamp_embeddings` calls it once for clips up to ``window_samples`` (the library's own forward,
unchanged) and, for longer clips, on windows of ``window_samples`` every ``hop_samples`` (the last one
shorter), ``windows_per_group`` windows at a time so memory stays bounded by the window, not the clip. Each
output frame comes from the window whose middle it is nearest: window k owns the times from
``start_k + (window - hop) / 2`` to the next window's boundary (the first window owns everything before, the last
everything after), so frames near a window edge, which saw little context, are never used.

Input checks, option checks and time pooling are hear_embed's own (``hear_embed.api``).
"""
from __future__ import annotations

import torch
from torch import nn

from hear_embed.api import EmbeddingOptions, check_audio, check_options, pool_frames


def baseline_options(options: dict, num_layers: int) -> EmbeddingOptions:
    """hear_embed's ``load_model`` options (``layer``, ``scene_pooling``, ``windows_per_group``), checked;
    ``quantize`` is hear_embed-only."""
    chosen = check_options(options, num_layers)
    if chosen.quantize != "none":
        raise ValueError(f"quantize={chosen.quantize!r} is implemented for hear_embed only, not for baselines")
    return chosen


class BaselineModel(nn.Module):
    """A HEAR-API baseline: subclasses set the attributes below and implement :meth:`encode`."""

    sample_rate = 16000
    min_samples: int  # shortest clip the model accepts
    window_samples: int  # longest chunk one encoder call sees; longer clips are windowed
    hop_samples: int  # window step for long clips (< window_samples)
    num_layers: int  # transformer layers; ``layer`` picks one of 1..num_layers
    hidden_size: int

    def __init__(self, options: dict):
        super().__init__()
        self.options = baseline_options(options, self.num_layers)
        self.timestamp_embedding_size = self.hidden_size
        self.scene_embedding_size = (2 if "+" in self.options.scene_pooling else 1) * self.hidden_size

    @property
    def layer(self) -> int:
        return self.options.layer or self.num_layers

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def prepare(self, audio: torch.Tensor) -> torch.Tensor:
        """Whole-clip preprocessing before windowing (n, samples) -> (n, samples); none by default."""
        return audio

    def encode(self, audio: torch.Tensor, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """audio (n, samples <= window_samples) -> frames (n, T, D) of transformer ``layer``, timestamps (T,) ms."""
        raise NotImplementedError


def window_starts(num_samples: int, window: int, hop: int) -> list[int]:
    """Start samples of the windows covering ``num_samples`` (the last window may run past the end)."""
    starts = [0]
    while starts[-1] + window < num_samples:
        starts.append(starts[-1] + hop)
    return starts


def windowed_frames(audio: torch.Tensor, model: BaselineModel, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
    """audio (n, samples) -> frames (n, T, D), timestamps (T,) ms, through windows for long clips."""
    samples = audio.shape[1]
    window, hop = model.window_samples, model.hop_samples
    if samples <= window:
        return model.encode(audio, layer)
    starts = window_starts(samples, window, hop)
    ms_per_sample = 1000.0 / model.sample_rate
    boundaries = [start + (window - hop) / 2 for start in starts[1:]]  # samples where ownership changes
    pieces, stamps = [], []
    full = [start for start in starts if start + window <= samples]
    group = model.options.windows_per_group
    for first in range(0, len(starts), group):
        batch_starts = starts[first:first + group]
        chunks = [audio[:, start:start + window] for start in batch_starts]
        if all(start in full for start in batch_starts):  # equal lengths: one call for the group
            frames, times = model.encode(torch.cat(chunks), layer)
            outputs = [(frames[i * len(audio):(i + 1) * len(audio)], times) for i in range(len(chunks))]
        else:
            outputs = [model.encode(chunk, layer) for chunk in chunks]
        for start, (frames, times) in zip(batch_starts, outputs):
            index = starts.index(start)
            absolute = times.to(torch.float64) + start * ms_per_sample
            low = boundaries[index - 1] * ms_per_sample if index > 0 else -float("inf")
            high = boundaries[index] * ms_per_sample if index < len(boundaries) else float("inf")
            keep = (absolute >= low) & (absolute < high)
            pieces.append(frames[:, keep.to(frames.device)])
            stamps.append(absolute[keep])
    return torch.cat(pieces, dim=1), torch.cat(stamps).float()


@torch.no_grad()
def get_timestamp_embeddings(audio, model: BaselineModel) -> tuple[torch.Tensor, torch.Tensor]:
    """HEAR API: audio (n_sounds, n_samples) float32 at 16 kHz -> embeddings (n, T, D) float32 and timestamps
    (n, T) ms, on the audio's device."""
    audio = check_audio(audio, model)
    frames, timestamps = windowed_frames(model.prepare(audio.to(model.device)), model, model.layer)
    return frames.float().to(audio.device), timestamps.float().to(audio.device).repeat(audio.shape[0], 1)


def get_scene_embeddings(audio, model: BaselineModel) -> torch.Tensor:
    """HEAR API: audio (n_sounds, n_samples) -> (n, scene_embedding_size), frames pooled as ``scene_pooling``."""
    frames, _ = get_timestamp_embeddings(audio, model)
    return pool_frames(frames, model.options.scene_pooling)
