"""Log-mel baseline as a HEAR-API module (``--model eval.baselines.logmel``); no learned weights.

Timestamp embeddings: 128-band log-mel frames, 16 kHz input, 25 ms Hann window (400 samples, n_fft 512),
20 ms hop (320 samples), centred STFT (reflect padding), power spectrum, HTK-scale triangular mel filters
from 0 to 8 kHz (no area normalisation), ``log(mel + 1e-6)``; frame i is stamped at 20 i ms. No per-clip
normalisation. Scene embedding: the mean and the standard deviation over time of those frames,
concatenated (256 values).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

SAMPLE_RATE = 16000
N_MELS = 128
N_FFT = 512
WIN_LENGTH = 400
HOP_LENGTH = 320


def mel_filterbank(n_mels: int = N_MELS, n_fft: int = N_FFT, sample_rate: int = SAMPLE_RATE) -> torch.Tensor:
    """(n_fft // 2 + 1, n_mels) HTK-scale triangular filters spanning 0 Hz to Nyquist."""
    def to_mel(hz):
        return 2595.0 * np.log10(1.0 + hz / 700.0)

    def to_hz(mel):
        return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)

    bin_hz = np.linspace(0.0, sample_rate / 2, n_fft // 2 + 1)
    edges = to_hz(np.linspace(0.0, to_mel(sample_rate / 2), n_mels + 2))
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bin_hz[None] - lower) / (centre - lower)
    falling = (upper - bin_hz[None]) / (upper - centre)
    return torch.tensor(np.maximum(0.0, np.minimum(rising, falling)).T, dtype=torch.float32)


class LogMelModel(nn.Module):
    """Fixed log-mel frontend; ``sample_rate`` and embedding sizes as the HEAR API asks."""

    sample_rate = SAMPLE_RATE
    timestamp_embedding_size = N_MELS
    scene_embedding_size = 2 * N_MELS

    def __init__(self):
        super().__init__()
        self.register_buffer("window", torch.hann_window(WIN_LENGTH), persistent=False)
        self.register_buffer("filters", mel_filterbank(), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """(n, samples) -> (n, frames, 128) log-mel, frames = samples // 320 + 1."""
        spectrum = torch.stft(audio, n_fft=N_FFT, hop_length=HOP_LENGTH, win_length=WIN_LENGTH, window=self.window,
                              center=True, pad_mode="reflect", return_complex=True)
        power = spectrum.abs().pow(2).transpose(1, 2)  # (n, frames, n_fft // 2 + 1)
        return torch.log(power @ self.filters + 1e-6)


def _check_audio(audio) -> torch.Tensor:
    audio = torch.as_tensor(audio)
    if audio.dim() != 2 or audio.shape[1] <= N_FFT // 2:
        raise ValueError(f"audio must have shape (n_sounds, n_samples) with n_samples > {N_FFT // 2}, got {tuple(audio.shape)}")
    return audio.float()


def load_model(model_file_path: str = "", **options) -> LogMelModel:
    """HEAR API. There are no weights and no options; any given are rejected by name."""
    if model_file_path:
        raise ValueError(f"the log-mel baseline has no weights; got model_file_path={model_file_path!r}")
    if options:
        raise ValueError(f"the log-mel baseline takes no options; got {sorted(options)}")
    return LogMelModel().eval()


def get_timestamp_embeddings(audio, model: LogMelModel) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, samples) at 16 kHz -> embeddings (n, frames, 128), timestamps (n, frames) in ms."""
    audio = _check_audio(audio).to(model.window.device)
    embeddings = model(audio)
    timestamps = torch.arange(embeddings.shape[1], dtype=torch.float32, device=audio.device) * (1000.0 * HOP_LENGTH / SAMPLE_RATE)
    return embeddings, timestamps.expand(audio.shape[0], -1)


def get_scene_embeddings(audio, model: LogMelModel) -> torch.Tensor:
    """(n, samples) at 16 kHz -> (n, 256): mean then std (population) of the log-mel frames over time."""
    frames, _ = get_timestamp_embeddings(audio, model)
    return torch.cat([frames.mean(dim=1), frames.std(dim=1, unbiased=False)], dim=1)
