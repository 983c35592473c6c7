"""The Acoustic Model's sliding window: one plan and one overlap-add, used by the model, long audio and the export.

Windows of ``max_length`` encoder frames start every ``max_length - overlap`` frames; each is encoded on its
own and the results are overlap-added with raised-cosine ramps, divided by the summed ramps.

Per clip, a window is used only if it starts before the clip's valid length and, except the first, the
clip reaches past the end of the previous window; this is what makes a clip's output independent of
the other clips in its batch (the reference's rule, reproduced exactly).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class WindowPlan:
    """Where the windows of a clip start, which ones a clip uses, their valid lengths and ramp weights."""

    max_length: int  # encoder frames per window
    overlap: int  # frames shared by consecutive windows

    @property
    def stride(self) -> int:
        return self.max_length - self.overlap

    def weights(self) -> torch.Tensor:
        """(max_length,) weights: 0.5 - 0.5 cos ramps over ``overlap`` frames at each end, clamped at 1e-3."""
        weights = torch.ones(self.max_length)
        if self.overlap > 0:
            ramp = torch.clamp(0.5 - 0.5 * torch.cos(torch.pi * torch.linspace(0, 1, self.overlap)), min=1e-3)
            weights[:self.overlap] = ramp
            weights[-self.overlap:] = ramp.flip(0)
        return weights

    def starts(self, total: int) -> torch.Tensor:
        """(num_windows,) start frames of the windows that tile ``total`` frames (padding the end)."""
        count = max(0, math.ceil((total - self.max_length) / self.stride)) + 1
        return torch.arange(count) * self.stride

    def used(self, lengths: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        """(batch, num_windows) bool: which windows each clip of valid length ``lengths`` (batch,) uses."""
        starts = starts.to(lengths.device)
        previous_end = starts + self.overlap  # the end of the window before each one
        begins_inside = starts[None, :] < lengths[:, None]
        needed = (starts == 0)[None, :] | (lengths[:, None] > previous_end[None, :])
        return begins_inside & needed

    def window_lengths(self, lengths: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        """(batch, num_windows) valid frames of each window of clips of valid length ``lengths`` (batch,)."""
        return torch.clamp(lengths[:, None] - starts.to(lengths.device)[None, :], min=0, max=self.max_length)


def cut_windows(hidden: torch.Tensor, starts: torch.Tensor, max_length: int) -> torch.Tensor:
    """(batch, time, hidden) -> (batch, num_windows, max_length, hidden), zero-padding past the end."""
    needed = int(starts[-1]) + max_length
    if hidden.shape[1] < needed:
        hidden = torch.nn.functional.pad(hidden, (0, 0, 0, needed - hidden.shape[1]))
    return torch.stack([hidden[:, s: s + max_length] for s in starts.tolist()], dim=1)


class OverlapAdd:
    """Accumulates ramp-weighted windows into (batch, total, hidden) and their weights into (batch, total, 1);
    :meth:`result` divides one by the other."""

    def __init__(self, plan: WindowPlan, batch: int, total: int, hidden_size: int, like: torch.Tensor):
        """``like``: a tensor whose dtype and device the output takes."""
        self.total = total
        self.weights = plan.weights().to(like)[:, None]  # (max_length, 1)
        self.out = like.new_zeros(batch, total, hidden_size)
        self.weight_sum = like.new_zeros(batch, total, 1)

    def add(self, start: int, windows: torch.Tensor, used: torch.Tensor) -> None:
        """Add windows (batch, max_length, hidden) starting at frame ``start``; ``used`` (batch,) bool says
        which clips take this window. Frames past ``total`` are dropped."""
        stop = min(start + len(self.weights), self.total)
        weights = self.weights[: stop - start]
        on = used[:, None, None].to(self.out.dtype)
        self.out[:, start:stop] += windows[:, : stop - start].to(self.out.dtype) * weights * on
        self.weight_sum[:, start:stop] += weights * on

    def result(self) -> torch.Tensor:
        """(batch, total, hidden): the weighted mean of the windows covering each frame."""
        return self.out.div_(self.weight_sum.clamp(min=torch.finfo(self.weight_sum.dtype).tiny))  # fp16-safe
