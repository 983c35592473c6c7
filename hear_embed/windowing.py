"""The Acoustic Model's sliding window: windows of ``max_length`` encoder frames every
``max_length - overlap`` frames, encoded separately and overlap-added with raised-cosine ramps.

Per clip, a window is used only if it starts before the clip's valid length and, except the first, the
clip reaches past the end of the previous window; this is what makes a clip's output independent of
the other clips in its batch (the reference's rule, reproduced exactly).
"""
from __future__ import annotations

import math

import torch


def ramp_window(max_length: int, overlap: int) -> torch.Tensor:
    """(max_length,) weights: 0.5 - 0.5 cos ramps over ``overlap`` frames at each end, clamped at 1e-3."""
    weights = torch.ones(max_length)
    if overlap > 0:
        ramp = torch.clamp(0.5 - 0.5 * torch.cos(torch.pi * torch.linspace(0, 1, overlap)), min=1e-3)
        weights[:overlap] = ramp
        weights[-overlap:] = ramp.flip(0)
    return weights


def window_starts(total: int, max_length: int, overlap: int) -> torch.Tensor:
    """(num_windows,) start frames of the windows that tile ``total`` frames (padding the end)."""
    stride = max_length - overlap
    count = max(0, math.ceil((total - max_length) / stride)) + 1
    return torch.arange(count) * stride


def windows_used(lengths: torch.Tensor, starts: torch.Tensor, max_length: int, overlap: int) -> torch.Tensor:
    """(batch, num_windows) bool: which windows each clip of valid length ``lengths`` (batch,) uses."""
    starts = starts.to(lengths.device)
    previous_end = starts - (max_length - overlap) + max_length
    begins_inside = starts[None, :] < lengths[:, None]
    needed = (starts == 0)[None, :] | (lengths[:, None] > previous_end[None, :])
    return begins_inside & needed


def window_lengths(lengths: torch.Tensor, starts: torch.Tensor, max_length: int) -> torch.Tensor:
    """(batch, num_windows) valid frames of each window."""
    return torch.clamp(lengths[:, None] - starts.to(lengths.device)[None, :], min=0, max=max_length)


def cut_windows(hidden: torch.Tensor, starts: torch.Tensor, max_length: int) -> torch.Tensor:
    """(batch, time, hidden) -> (batch, num_windows, max_length, hidden), zero-padding past the end."""
    needed = int(starts[-1]) + max_length
    if hidden.shape[1] < needed:
        hidden = torch.nn.functional.pad(hidden, (0, 0, 0, needed - hidden.shape[1]))
    return torch.stack([hidden[:, s: s + max_length] for s in starts.tolist()], dim=1)


def overlap_add(windows: torch.Tensor, used: torch.Tensor, starts: torch.Tensor, weights: torch.Tensor,
                total: int) -> torch.Tensor:
    """Weighted overlap-add of encoded windows.

    windows (batch, num_windows, max_length, hidden), used (batch, num_windows) -> (batch, total, hidden):
    sum of weight * window over the used windows covering each frame, divided by the summed weights.
    """
    batch, _, max_length, hidden_size = windows.shape
    padded_total = int(starts[-1]) + max_length
    out = windows.new_zeros(batch, padded_total, hidden_size)
    weight_sum = windows.new_zeros(batch, padded_total, 1)
    weights = weights.to(windows)[None, :, None]
    for index, start in enumerate(starts.tolist()):
        on = used[:, index, None, None].to(windows.dtype)
        out[:, start: start + max_length] += windows[:, index] * weights * on
        weight_sum[:, start: start + max_length] += weights * on
    return (out / weight_sum.clamp(min=torch.finfo(weight_sum.dtype).tiny))[:, :total]
