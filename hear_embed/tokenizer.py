"""The Acoustic Tokenizer: an encoder (no sliding window) and a linear layer to discrete code logits,
the stage-1 model that gives the Acoustic Model its masked-prediction targets."""
from __future__ import annotations

import torch
from torch import nn

from hear_embed.config import TokenizerConfig
from hear_embed.layers import Encoder, full_lengths


class AcousticTokenizer(nn.Module):
    """Encoder + linear: (batch, n_mels, frames) -> code logits (batch, frames // 2, num_codebooks). No sliding window."""

    def __init__(self, config: TokenizerConfig = TokenizerConfig()):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.linear = nn.Linear(config.hidden_size, config.num_codebooks)

    def forward(self, log_mel: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """log_mel (batch, n_mels, frames), lengths (batch,) valid mel frames (all by default) ->
        logits (batch, frames // 2, num_codebooks) and (batch,) lengths in encoder frames."""
        if log_mel.shape[-1] // 2 > self.config.max_length:
            raise ValueError(f"the tokenizer accepts at most {self.config.max_length} encoder frames "
                             f"({2 * self.config.max_length} mel frames, 6 s); got {log_mel.shape[-1]} mel frames")
        hidden, lengths = self.encoder(log_mel, full_lengths(log_mel) if lengths is None else lengths)
        return self.linear(hidden), lengths
