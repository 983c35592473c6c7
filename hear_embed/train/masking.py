"""Which encoder frames masked audio modeling hides.

``exact`` (default): each clip hides round(rate * valid frames) of its valid frames, at least one, chosen
uniformly without replacement. ``reference``: the authors' rule, a frame is hidden where
``randn + (1 if padded else 0) < rate``: with rate 0.4 that hides P(N(0,1) < 0.4) = 65.5 % of valid frames
(not 40 %) and also about 27 % of padded frames, which then count in the loss.
"""
from __future__ import annotations

import torch


MASK_MODES = ("exact", "reference")


def frame_mask(lengths: torch.Tensor, num_frames: int, rate: float, seeds: torch.Tensor, mode: str = "exact") -> torch.Tensor:
    """(batch, num_frames) bool, True where hidden; row b drawn from a generator seeded with ``seeds[b]``."""
    if mode not in MASK_MODES:
        raise ValueError(f"mask mode must be one of {MASK_MODES}, got {mode!r}")
    if not 0.0 < rate < 1.0:
        raise ValueError(f"mask rate must be in (0, 1), got {rate}")
    rows = []
    for length, seed in zip(lengths.tolist(), seeds.tolist()):
        generator = torch.Generator().manual_seed(int(seed))
        row = torch.zeros(num_frames, dtype=torch.bool)
        if mode == "exact":
            count = max(1, round(rate * length)) if length > 0 else 0
            row[torch.randperm(length, generator=generator)[:count]] = True
        else:
            padded = (torch.arange(num_frames) >= length).float()
            row = torch.randn(num_frames, generator=generator) + padded < rate
        rows.append(row)
    return torch.stack(rows).to(lengths.device)


__all__ = ["MASK_MODES", "frame_mask"]
