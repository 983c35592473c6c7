"""Acoustic Model outputs for audio of any length, in bounded memory: long audio, window group by window group.

Clips of at most ``max_length`` encoder frames (6 s) go through ``AcousticModel(Frontend(audio))``
directly. Longer clips are computed in two passes that give the same numbers as that plain
computation without ever holding the whole log-mel, conv features or attention of a clip:

1. the per-clip DC offset (mean over samples), then the per-clip log-mel mean and population std,
   gathered over chunks of spectrogram frames (:class:`RunningStats`, float64 sums);
2. groups of the model's sliding windows (``windows_per_group`` windows, default 4): the normalized log-mel
   frames they cover, their conv features, then :meth:`AcousticModel.encode_windows` into one overlap-add.

All clips of one call have the same length, so they share one window plan and every window is used.
"""
from __future__ import annotations

import torch

from hear_embed.acoustic_model import AcousticModel
from hear_embed.frontend import Frontend, RunningStats, encoder_frame_count, num_frames
from hear_embed.layers import full_lengths
from hear_embed.windowing import OverlapAdd

STATS_CHUNK_FRAMES = 4096  # spectrogram frames (41 s) per chunk of the statistics pass


def log_mel_statistics(frontend: Frontend, audio: torch.Tensor, dc: torch.Tensor,
                       chunk_frames: int = STATS_CHUNK_FRAMES) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-clip mean and population std (batch,) of the un-normalized log-mel over all frames and bins."""
    stats = RunningStats(audio.shape[0], audio.device)
    total = num_frames(audio.shape[-1], frontend.config.hop_length)
    for start in range(0, total, chunk_frames):
        stats.update(frontend.log_mel(frontend.power_frames(audio, start, start + chunk_frames, dc)))
    return stats.mean_std()


@torch.no_grad()
def windowed_hidden(frontend: Frontend, model: AcousticModel, audio: torch.Tensor, num_layers: int | None = None,
                    windows_per_group: int = 4, stats_chunk_frames: int = STATS_CHUNK_FRAMES) -> torch.Tensor:
    """Sliding-window Acoustic Model output of equal-length clips: audio (batch, samples) -> (batch, frames, hidden)."""
    batch = audio.shape[0]
    plan = model.window_plan
    total = encoder_frame_count(audio.shape[-1], frontend.config.hop_length)
    lengths = torch.full((batch,), total, device=audio.device)
    dc = audio.mean(dim=-1, keepdim=True)
    mean, std = log_mel_statistics(frontend, audio, dc, stats_chunk_frames)
    overlap_add = OverlapAdd(plan, batch, total, model.config.hidden_size, like=audio)
    for group in plan.starts(total).split(windows_per_group):
        first, last = int(group[0]), min(int(group[-1]) + plan.max_length, total)
        power = frontend.power_frames(audio, 2 * first, 2 * last, dc)
        log_mel = frontend.normalize(frontend.log_mel(power), mean, std)
        hidden, _ = model.feature_extractor(log_mel, full_lengths(log_mel))  # (batch, last - first, hidden)
        model.encode_windows(hidden, lengths, group, overlap_add, num_layers, offset=first)
    return overlap_add.result()


@torch.no_grad()
def acoustic_hidden(frontend: Frontend, model: AcousticModel, audio: torch.Tensor, num_layers: int | None = None,
                    windows_per_group: int = 4) -> torch.Tensor:
    """Acoustic Model output of equal-length clips, audio (batch, samples) -> (batch, frames, hidden): the plain
    computation for clips of up to ``max_length`` encoder frames, :func:`windowed_hidden` beyond."""
    if encoder_frame_count(audio.shape[-1], frontend.config.hop_length) <= model.config.max_length:
        hidden, _ = model(frontend(audio), num_layers=num_layers)
        return hidden
    return windowed_hidden(frontend, model, audio, num_layers, windows_per_group)
