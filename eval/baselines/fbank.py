"""Kaldi-compatible log mel filterbank in plain torch (the features BEATs, AST and AudioMAE are trained on).

Reproduces ``torchaudio.compliance.kaldi.fbank`` for the options those models use, without torchaudio at run
time: frames of ``frame_length`` ms every ``frame_shift`` ms with ``snip_edges`` (``1 + (n - window) // shift``
frames, no padding), optional per-frame DC removal, pre-emphasis (the first sample pre-emphasised against
itself), a Povey (``hann ** 0.85``) or symmetric Hann window, zero-padding to the next power of two, power
spectrum, Kaldi mel filters (mel = 1127 ln(1 + f / 700), triangles in mel space from ``low_freq`` to
``high_freq``; ``high_freq <= 0`` means Nyquist plus it), ``log(max(energy, float32 eps))``. With ``use_energy``
the log frame energy (after DC removal, before pre-emphasis and windowing) is the first column, or the last
with ``htk_compat``. Dither is not implemented (all three models use ``dither=0``).

BEATs: ``fbank(waveform * 2**15, FbankOptions())``; AST and AudioMAE: ``FbankOptions(window="hanning",
htk_compat=True)`` (AudioMAE subtracts the clip's mean sample first).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

EPSILON = torch.finfo(torch.float32).eps


@dataclass(frozen=True)
class FbankOptions:
    """The subset of Kaldi's fbank options the baselines need (Kaldi's defaults otherwise)."""

    sample_rate: int = 16000
    num_mel_bins: int = 128
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    window: str = "povey"  # "povey" (Kaldi's default, BEATs) or "hanning" (AST, AudioMAE)
    preemphasis: float = 0.97
    remove_dc_offset: bool = True
    low_freq: float = 20.0
    high_freq: float = 0.0  # <= 0: offset from Nyquist
    use_energy: bool = False  # add the log frame energy as a column
    htk_compat: bool = False  # energy column last instead of first

    @property
    def window_samples(self) -> int:
        return int(self.sample_rate * self.frame_length_ms / 1000)

    @property
    def shift_samples(self) -> int:
        return int(self.sample_rate * self.frame_shift_ms / 1000)

    @property
    def fft_size(self) -> int:
        return 1 << math.ceil(math.log2(self.window_samples))


def num_frames(num_samples: int, options: FbankOptions) -> int:
    """Frames Kaldi's fbank yields for ``num_samples`` (0 when shorter than one window)."""
    if num_samples < options.window_samples:
        return 0
    return 1 + (num_samples - options.window_samples) // options.shift_samples


def frame_centre_ms(frame: torch.Tensor | float, options: FbankOptions) -> torch.Tensor | float:
    """Centre of fbank frame ``frame`` (may be fractional, e.g. a patch centre) in ms from the clip start."""
    return (frame * options.shift_samples + options.window_samples / 2) * 1000.0 / options.sample_rate


def mel_filters(options: FbankOptions) -> torch.Tensor:
    """(num_mel_bins, fft_size // 2 + 1) Kaldi triangular filters; the Nyquist column is zero."""
    nyquist = options.sample_rate / 2
    high = options.high_freq if options.high_freq > 0 else nyquist + options.high_freq
    if not 0.0 <= options.low_freq < high <= nyquist:
        raise ValueError(f"fbank needs 0 <= low_freq < high_freq <= Nyquist, got {options.low_freq}, {high}")
    mel_low, mel_high = (1127.0 * math.log(1.0 + hz / 700.0) for hz in (options.low_freq, high))
    delta = (mel_high - mel_low) / (options.num_mel_bins + 1)
    left = mel_low + torch.arange(options.num_mel_bins, dtype=torch.float32)[:, None] * delta
    centre, right = left + delta, left + 2 * delta
    hz = options.sample_rate / options.fft_size * torch.arange(options.fft_size // 2, dtype=torch.float32)
    bins = (1127.0 * (1.0 + hz / 700.0).log())[None]
    filters = torch.clamp(torch.minimum((bins - left) / (centre - left), (right - bins) / (right - centre)), min=0)
    return torch.nn.functional.pad(filters, (0, 1))


def analysis_window(options: FbankOptions) -> torch.Tensor:
    """(window_samples,) the symmetric Hann window, raised to 0.85 for "povey"."""
    hann = torch.hann_window(options.window_samples, periodic=False)
    if options.window == "povey":
        return hann.pow(0.85)
    if options.window == "hanning":
        return hann
    raise ValueError(f"fbank window must be 'povey' or 'hanning', got {options.window!r}")


def fbank(waveform: torch.Tensor, options: FbankOptions) -> torch.Tensor:
    """(batch, samples) float32 -> (batch, frames, num_mel_bins [+ 1 energy]) Kaldi log mel filterbank."""
    if waveform.dim() != 2:
        raise ValueError(f"fbank expects (batch, samples), got shape {tuple(waveform.shape)}")
    if num_frames(waveform.shape[1], options) == 0:
        raise ValueError(f"fbank needs at least {options.window_samples} samples, got {waveform.shape[1]}")
    frames = waveform.unfold(1, options.window_samples, options.shift_samples)  # (batch, frames, window)
    if options.remove_dc_offset:
        frames = frames - frames.mean(dim=-1, keepdim=True)
    energy = frames.pow(2).sum(dim=-1).clamp(min=EPSILON).log() if options.use_energy else None
    if options.preemphasis:
        previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
        frames = frames - options.preemphasis * previous
    frames = frames * analysis_window(options).to(frames)
    frames = torch.nn.functional.pad(frames, (0, options.fft_size - options.window_samples))
    power = torch.fft.rfft(frames).abs().pow(2)
    mel = (power @ mel_filters(options).to(power).T).clamp(min=EPSILON).log()
    if energy is None:
        return mel
    parts = [mel, energy[..., None]] if options.htk_compat else [energy[..., None], mel]
    return torch.cat(parts, dim=-1)
