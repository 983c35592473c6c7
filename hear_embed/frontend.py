"""Waveform -> normalized log-mel spectrogram and log power spectrum, in pure torch.

Matches the reference preprocessor (torchaudio ``Spectrogram``/``MelSpectrogram``) to about 1e-6:
DC removal, mono mix, centered STFT with reflect padding, power 2, HTK mel bands without band
normalization, ``log(x + eps)``, then one mean and one population std per clip over all bins and frames.
Long audio can be processed frame range by frame range (:meth:`Frontend.power_frames`) with the
per-clip statistics gathered in a first pass (:class:`RunningStats`), giving the same numbers.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from hear_embed.config import FrontendConfig


MAX_SAFE_PEAK = 2.0 ** 40  # sample magnitude above which :func:`overflow_scale` rescales a clip


def hz_to_mel(freq: float) -> float:
    return 2595.0 * math.log10(1.0 + freq / 700.0)


def mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    return 700.0 * (10.0 ** (mel / 2595.0) - 1.0)


def mel_filterbank(n_freqs: int, n_mels: int, sample_rate: int) -> torch.Tensor:
    """Triangular HTK-scale filters from 0 Hz to sample_rate / 2, no normalization: (n_freqs, n_mels)."""
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs)
    mel_points = torch.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2), n_mels + 2)
    freq_points = mel_to_hz(mel_points)
    widths = freq_points[1:] - freq_points[:-1]  # (n_mels + 1,)
    slopes = freq_points.unsqueeze(0) - all_freqs.unsqueeze(1)  # (n_freqs, n_mels + 2)
    rising = -slopes[:, :-2] / widths[:-1]
    falling = slopes[:, 2:] / widths[1:]
    return torch.clamp(torch.minimum(rising, falling), min=0.0)


def num_frames(num_samples: int | torch.Tensor, hop_length: int = 160):
    """Spectrogram frames of a centered STFT: floor(samples / hop) + 1."""
    return num_samples // hop_length + 1


def encoder_frame_count(num_samples: int | torch.Tensor, hop_length: int = 160):
    """Encoder frames (20 ms: two spectrogram frames each, the conv's stride) of ``num_samples`` samples."""
    return num_frames(num_samples, hop_length) // 2


def min_samples(config: FrontendConfig = FrontendConfig()) -> int:
    """Shortest accepted input: the centered STFT reflect-pads ``n_fft / 2`` samples, which needs one more."""
    return config.n_fft // 2 + 1


def encoder_frame_times_ms(num_encoder_frames: int, config: FrontendConfig = FrontendConfig()) -> torch.Tensor:
    """(num_encoder_frames,) float64 ms: encoder frame i covers spectrogram frames 2i and 2i+1, centred at 2i and
    2i+1 hops, so it is stamped at (2i + 0.5) hops: 20 i + 5 ms."""
    hop_ms = 1000.0 * config.hop_length / config.sample_rate
    return (torch.arange(num_encoder_frames, dtype=torch.float64) * 2 + 0.5) * hop_ms


def mono_without_dc(waveform: torch.Tensor) -> torch.Tensor:
    """(batch, channels, samples) or (batch, samples) -> (batch, samples): subtract each channel's mean, then average channels."""
    if waveform.dim() == 2:
        waveform = waveform.unsqueeze(1)
    waveform = waveform - waveform.mean(dim=-1, keepdim=True)
    return waveform.mean(dim=1)


def overflow_scale(peak: torch.Tensor) -> torch.Tensor:
    """(batch,) peak sample magnitude -> (batch,) factor: 1, or for a clip louder than ``MAX_SAFE_PEAK`` the power
    of two (exact in floating point) that brings its peak to at most 1. Its float32 power spectrum would overflow
    to Inf (from a peak of about 3e16) and the normalized spectra to NaN; a normalized log spectrum does not
    depend on the scale but through ``eps``, negligible at such levels. Branch-free, so it can be exported."""
    exponent = torch.where(peak > MAX_SAFE_PEAK, torch.ceil(torch.log2(peak.double())), 0.0)
    return torch.exp2(-exponent).to(peak.dtype)


def reflect_padded_index(start: int, stop: int, pad: int, num_samples: int,
                         device: torch.device | None = None) -> torch.Tensor:
    """(stop - start,) indices into a signal of ``num_samples`` samples of positions ``start:stop`` of that signal
    reflect-padded by ``pad`` on both sides."""
    if num_samples <= pad:
        raise ValueError(f"reflect padding of {pad} samples needs more than {pad} samples, got {num_samples}")
    index = torch.arange(start, stop, device=device) - pad
    index = torch.where(index < 0, -index, index)
    return torch.where(index >= num_samples, 2 * (num_samples - 1) - index, index)


def reflect_padded_slice(waveform: torch.Tensor, start: int, stop: int, pad: int) -> torch.Tensor:
    """Samples ``start:stop`` of ``waveform`` (batch, samples) reflect-padded by ``pad`` on both sides,
    without building the whole padded signal. Indices are those of the padded signal."""
    n = waveform.shape[-1]
    index = reflect_padded_index(start, stop, pad, n, waveform.device)
    if start >= pad and stop <= n + pad:  # no reflection needed: a plain view is cheaper
        return waveform[:, start - pad: stop - pad]
    return waveform[:, index]


class RunningStats:
    """Mean and population std of a per-clip quantity gathered chunk by chunk (float64 sums)."""

    def __init__(self, batch_size: int, device: torch.device):
        self.count = 0
        self.total = torch.zeros(batch_size, dtype=torch.float64, device=device)
        self.total_sq = torch.zeros(batch_size, dtype=torch.float64, device=device)

    def update(self, values: torch.Tensor) -> None:
        """values: (batch, ...)."""
        flat = values.reshape(values.shape[0], -1).double()
        self.count += flat.shape[1]
        self.total += flat.sum(dim=1)
        self.total_sq += (flat * flat).sum(dim=1)

    def mean_std(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(batch,) mean and population std, float32."""
        mean = self.total / self.count
        var = (self.total_sq / self.count - mean * mean).clamp(min=0.0)
        return mean.float(), var.sqrt().float()


class Frontend(nn.Module):
    """Normalized log-mel (batch, n_mels, frames) and log power spectrum (batch, n_fft/2+1, frames)."""

    def __init__(self, config: FrontendConfig = FrontendConfig()):
        super().__init__()
        self.config = config
        self.register_buffer("window", torch.hann_window(config.win_length), persistent=False)
        fb = mel_filterbank(config.n_fft // 2 + 1, config.n_mels, config.sample_rate)
        self.register_buffer("mel_fb", fb, persistent=False)

    @property
    def n_freqs(self) -> int:
        return self.config.n_fft // 2 + 1

    def power(self, waveform: torch.Tensor) -> torch.Tensor:
        """Power spectrogram of a centered STFT: (batch, samples) -> (batch, n_freqs, frames)."""
        cfg = self.config
        spec = torch.stft(waveform, n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length,
                          window=self.window, center=True, pad_mode="reflect", return_complex=True)
        return spec.real.square() + spec.imag.square()

    def power_frames(self, waveform: torch.Tensor, start: int, stop: int, dc: torch.Tensor | None = None) -> torch.Tensor:
        """Frames ``start:stop`` of :meth:`power` of ``waveform - dc`` (dc: (batch, 1) or None), computed from only
        the samples they need: (batch, samples) -> (batch, n_freqs, stop - start)."""
        cfg = self.config
        stop = min(stop, num_frames(waveform.shape[-1], cfg.hop_length))
        samples = reflect_padded_slice(waveform, start * cfg.hop_length, (stop - 1) * cfg.hop_length + cfg.n_fft,
                                       cfg.n_fft // 2)
        return self.padded_power(samples, dc)

    def padded_power(self, samples: torch.Tensor, dc: torch.Tensor | None = None) -> torch.Tensor:
        """Power frames of already padded samples (batch, (frames - 1) * hop + n_fft), less ``dc`` (batch, 1) or
        None: (batch, n_freqs, frames), as :meth:`power_frames` computes them."""
        cfg = self.config
        if dc is not None:
            samples = samples - dc
        spec = torch.stft(samples, n_fft=cfg.n_fft, hop_length=cfg.hop_length, win_length=cfg.win_length,
                          window=self.window, center=False, return_complex=True)
        return spec.real.square() + spec.imag.square()

    def log_mel(self, power: torch.Tensor) -> torch.Tensor:
        """(batch, n_freqs, frames) power -> (batch, n_mels, frames) un-normalized log-mel."""
        mel = torch.matmul(power.transpose(1, 2), self.mel_fb).transpose(1, 2)
        return torch.log(mel + self.config.eps)

    def log_power(self, power: torch.Tensor) -> torch.Tensor:
        return torch.log(power + self.config.eps)

    def normalize(self, spec: torch.Tensor, mean: torch.Tensor | None = None, std: torch.Tensor | None = None) -> torch.Tensor:
        """Per-clip standardization; statistics over all bins and frames unless given as (batch,)."""
        if mean is None or std is None:
            mean = spec.mean(dim=(-2, -1))
            std = spec.std(dim=(-2, -1), unbiased=False)
        return (spec - mean[:, None, None]) / (std[:, None, None] + self.config.eps)

    @torch.no_grad()
    def forward(self, waveform: torch.Tensor, with_power: bool = False):
        """waveform (batch, samples) or (batch, channels, samples) -> normalized log-mel (batch, n_mels, frames),
        and with ``with_power`` also the normalized log power spectrum (batch, n_freqs, frames)."""
        scale = overflow_scale(waveform.abs().flatten(1).amax(dim=1))  # 1 unless the clip would overflow
        power = self.power(mono_without_dc(waveform * scale.view(-1, *[1] * (waveform.dim() - 1))))
        log_mel = self.normalize(self.log_mel(power))
        if not with_power:
            return log_mel
        return log_mel, self.normalize(self.log_power(power))


__all__ = ["Frontend", "RunningStats", "encoder_frame_count", "encoder_frame_times_ms", "min_samples", "mel_filterbank", "mono_without_dc", "num_frames", "overflow_scale"]
