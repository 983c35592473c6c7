"""The Acoustic Model: conv feature extractor + relative-position transformer, with a sliding window
for inputs longer than ``max_length`` encoder frames (6 s)."""
from __future__ import annotations

import torch

from hear_embed.config import AcousticModelConfig
from hear_embed.layers import Encoder
from hear_embed.windowing import cut_windows, overlap_add, ramp_window, window_lengths, window_starts, windows_used


class AcousticModel(Encoder):
    """(batch, n_mels, frames) normalized log-mel -> (batch, frames // 2, hidden_size), 50 frames per second."""

    def __init__(self, config: AcousticModelConfig = AcousticModelConfig()):
        super().__init__(config)
        self.config = config
        self.register_buffer("window_weights", ramp_window(config.max_length, config.overlap), persistent=False)

    def encode_windows(self, windows: torch.Tensor, lengths: torch.Tensor, num_layers: int | None = None) -> torch.Tensor:
        """Encode independent windows: (n, max_length, hidden) with (n,) valid lengths -> same shape."""
        return self.contextual_encoder(windows, lengths, num_layers)

    def forward(self, log_mel: torch.Tensor, lengths: torch.Tensor | None = None,
                num_layers: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """log_mel (batch, n_mels, frames), lengths (batch,) valid mel frames (all by default) ->
        hidden (batch, frames // 2, hidden_size) after ``num_layers`` transformer layers, and (batch,) lengths."""
        if lengths is None:
            lengths = torch.full((log_mel.shape[0],), log_mel.shape[-1], dtype=torch.long, device=log_mel.device)
        hidden, lengths = self.feature_extractor(log_mel, lengths)
        total = hidden.shape[1]
        max_length, overlap = self.config.max_length, self.config.overlap
        if total <= max_length:
            return self.contextual_encoder(hidden, lengths, num_layers), lengths

        starts = window_starts(total, max_length, overlap)
        used = windows_used(lengths, starts, max_length, overlap)
        windows = cut_windows(hidden, starts, max_length)
        encoded = windows.new_zeros(windows.shape)
        encoded[used] = self.encode_windows(windows[used], window_lengths(lengths, starts, max_length)[used], num_layers)
        return overlap_add(encoded, used, starts, self.window_weights, total), lengths
