"""Acoustic Model outputs for audio of any length, in bounded memory.

Clips of at most ``max_length`` encoder frames (6 s) go through ``AcousticModel(Frontend(audio))``
directly. Longer clips are computed in two passes that give the same numbers as that plain
computation without ever holding the whole log-mel, conv features or attention of a clip:

1. the per-clip DC offset (mean over samples), then the per-clip log-mel mean and population std,
   gathered over chunks of spectrogram frames (:class:`RunningStats`, float64 sums);
2. groups of sliding windows (``windows_per_group`` windows, default 4, of ``max_length`` encoder frames): the
   normalized log-mel frames they cover, their conv features, the windows encoded in one batch with
   their valid lengths, ramp-weighted and added into a preallocated output and a weight sum.

All clips of one call have the same length, so they share one window plan and every window is used
(the reference's per-clip window rule only matters for zero-padded batches).
"""
from __future__ import annotations

import torch

from hear_embed.acoustic_model import AcousticModel
from hear_embed.frontend import Frontend, RunningStats, num_frames
from hear_embed.windowing import cut_windows, window_starts

STATS_CHUNK_FRAMES = 4096  # spectrogram frames (41 s) per chunk of the statistics pass


def encoder_frame_count(num_samples: int, hop_length: int = 160) -> int:
    """Encoder frames the Acoustic Model emits for a clip of ``num_samples`` samples."""
    return num_frames(num_samples, hop_length) // 2


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
    max_length, overlap = model.config.max_length, model.config.overlap
    total = encoder_frame_count(audio.shape[-1], frontend.config.hop_length)
    dc = audio.mean(dim=-1, keepdim=True)
    mean, std = log_mel_statistics(frontend, audio, dc, stats_chunk_frames)

    weights = model.window_weights.to(audio.dtype)
    out = audio.new_zeros(batch, total, model.config.hidden_size)
    weight_sum = audio.new_zeros(total, 1)
    for group in window_starts(total, max_length, overlap).split(windows_per_group):
        first, last = int(group[0]), min(int(group[-1]) + max_length, total)
        power = frontend.power_frames(audio, 2 * first, 2 * last, dc)
        log_mel = frontend.normalize(frontend.log_mel(power), mean, std)
        conv_lengths = torch.full((batch,), log_mel.shape[-1], device=audio.device)
        hidden, _ = model.feature_extractor(log_mel, conv_lengths)  # (batch, last - first, hidden)
        windows = cut_windows(hidden, group - first, max_length)  # (batch, windows, max_length, hidden)
        valid = torch.clamp(total - group, max=max_length).to(audio.device)
        encoded = model.encode_windows(windows.flatten(0, 1), valid.repeat(batch), num_layers)
        encoded = encoded.view(windows.shape)
        for index, start in enumerate(group.tolist()):
            stop = min(start + max_length, total)
            ramp = weights[: stop - start, None]
            out[:, start:stop] += encoded[:, index, : stop - start] * ramp
            weight_sum[start:stop] += ramp
    return out.div_(weight_sum.clamp(min=torch.finfo(weight_sum.dtype).tiny))  # fp16-safe


@torch.no_grad()
def acoustic_hidden(frontend: Frontend, model: AcousticModel, audio: torch.Tensor, num_layers: int | None = None,
                    windows_per_group: int = 4) -> torch.Tensor:
    """Acoustic Model output of equal-length clips, audio (batch, samples) -> (batch, frames, hidden): the plain
    computation for clips of up to ``max_length`` encoder frames, :func:`windowed_hidden` beyond."""
    if encoder_frame_count(audio.shape[-1], frontend.config.hop_length) <= model.config.max_length:
        hidden, _ = model(frontend(audio), num_layers=num_layers)
        return hidden
    return windowed_hidden(frontend, model, audio, num_layers, windows_per_group)
