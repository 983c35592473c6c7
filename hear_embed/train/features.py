"""Padded waveform batch -> per-clip normalized log-mel, the input of the tokenizer and the Acoustic Model."""
from __future__ import annotations

import torch

from hear_embed.frontend import Frontend, num_frames
from hear_embed.layers import length_mask


@torch.no_grad()
def log_mel_batch(frontend: Frontend, waveform: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """waveform (batch, samples) zero-padded, lengths (batch,) valid samples ->
    log-mel (batch, n_mels, frames) and (batch,) valid frames.

    Unlike the reference, which normalizes over the padded batch, each clip is standardized with the mean
    and population std of its own valid frames only (as when the clip is embedded alone), and padded frames
    are set to 0. DC removal also uses the valid samples only.
    """
    valid_samples = length_mask(lengths, waveform.shape[-1]).to(waveform.dtype)
    mean = (waveform * valid_samples).sum(-1, keepdim=True) / lengths.clamp(min=1)[:, None]
    waveform = (waveform - mean) * valid_samples
    log_mel = frontend.log_mel(frontend.power(waveform))
    frames = num_frames(lengths, frontend.config.hop_length).clamp(max=log_mel.shape[-1])
    valid = length_mask(frames, log_mel.shape[-1])[:, None, :]
    count = (frames * log_mel.shape[1]).to(log_mel.dtype)
    clip_mean = log_mel.masked_fill(~valid, 0.0).sum(dim=(1, 2)) / count
    clip_var = ((log_mel - clip_mean[:, None, None]) ** 2).masked_fill(~valid, 0.0).sum(dim=(1, 2)) / count
    normalized = frontend.normalize(log_mel, clip_mean, clip_var.sqrt())
    return normalized.masked_fill(~valid, 0.0), frames
