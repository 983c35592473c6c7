"""The Acoustic Model: conv feature extractor + relative-position transformer, with a sliding window
for inputs longer than ``max_length`` encoder frames (6 s)."""
from __future__ import annotations

import torch

from hear_embed.config import AcousticModelConfig
from hear_embed.layers import Encoder, full_lengths
from hear_embed.windowing import OverlapAdd, WindowPlan, cut_windows


class AcousticModel(Encoder):
    """(batch, n_mels, frames) normalized log-mel -> (batch, frames // 2, hidden_size), 50 frames per second."""

    def __init__(self, config: AcousticModelConfig = AcousticModelConfig()):
        super().__init__(config)
        self.config = config
        self.window_plan = WindowPlan(max_length=config.max_length, overlap=config.overlap)

    def encode_windows(self, hidden: torch.Tensor, lengths: torch.Tensor, starts: torch.Tensor, into: OverlapAdd,
                       num_layers: int | None = None, offset: int = 0) -> None:
        """Encode the windows at ``starts`` (clip frames) and add them ``into`` the overlap-add.

        hidden (batch, time, hidden_size): conv features of clip frames ``offset`` onwards; lengths (batch,):
        the clips' valid frames. Windows a clip does not use (see :class:`WindowPlan`) are not encoded."""
        plan = self.window_plan
        windows = cut_windows(hidden, starts - offset, plan.max_length)  # (batch, windows, max_length, hidden)
        used = plan.used(lengths, starts)
        encoded = windows.new_zeros(windows.shape)
        encoded[used] = self.contextual_encoder(windows[used], plan.window_lengths(lengths, starts)[used], num_layers)
        for index, start in enumerate(starts.tolist()):
            into.add(start, encoded[:, index], used[:, index])

    def forward(self, log_mel: torch.Tensor, lengths: torch.Tensor | None = None,
                num_layers: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """log_mel (batch, n_mels, frames), lengths (batch,) valid mel frames (all by default) ->
        hidden (batch, frames // 2, hidden_size) after ``num_layers`` transformer layers, and (batch,) lengths."""
        hidden, lengths = self.feature_extractor(log_mel, full_lengths(log_mel) if lengths is None else lengths)
        batch, total, hidden_size = hidden.shape
        if total <= self.config.max_length:
            return self.contextual_encoder(hidden, lengths, num_layers), lengths
        overlap_add = OverlapAdd(self.window_plan, batch, total, hidden_size, like=hidden)
        self.encode_windows(hidden, lengths, self.window_plan.starts(total), overlap_add, num_layers)
        return overlap_add.result(), lengths
