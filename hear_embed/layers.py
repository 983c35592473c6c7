"""Building blocks of the HEAR encoders: conv feature extractor, feed-forward, pre-norm transformer layer,
contextual encoder, and the encoder (feature extractor + contextual encoder) the models share."""
from __future__ import annotations

import torch
from torch import nn

from hear_embed.attention import RelativePositionSelfAttention
from hear_embed.config import FrontendConfig


def length_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """(batch,) valid lengths -> (batch, max_len) bool mask, True on valid frames."""
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def full_lengths(batch: torch.Tensor) -> torch.Tensor:
    """(batch, ..., time) -> (batch,) int64 lengths saying every item is valid over its whole time axis."""
    return torch.full((batch.shape[0],), batch.shape[-1], dtype=torch.long, device=batch.device)


class FeatureExtractor(nn.Module):
    """Conv1d (kernel 2, stride 2) + ReLU: (batch, n_mels, frames) -> (batch, frames // 2, hidden)."""

    def __init__(self, n_mels: int, hidden_size: int):
        super().__init__()
        self.conv = nn.Conv1d(n_mels, hidden_size, kernel_size=2, stride=2)

    def forward(self, log_mel: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = torch.relu(self.conv(log_mel)).transpose(1, 2)
        return hidden, lengths // 2


class FeedForward(nn.Module):
    """LayerNorm -> Linear -> SiLU -> Dropout -> Linear -> Dropout (its own norm, after the layer's)."""

    def __init__(self, hidden_size: int, intermediate_size: int, dropout: float):
        super().__init__()
        self.layer_norm = nn.LayerNorm(hidden_size)
        self.intermediate_dense = nn.Linear(hidden_size, intermediate_size)
        self.output_dense = nn.Linear(intermediate_size, hidden_size)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.silu(self.intermediate_dense(self.layer_norm(x)))
        return self.dropout(self.output_dense(self.dropout(x)))


class TransformerLayer(nn.Module):
    """Pre-norm layer: x + attention(norm1(x)), then x + ffn(norm2(x)); no final norm."""

    def __init__(self, hidden_size: int, intermediate_size: int, num_heads: int, dropout: float, max_length: int):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(hidden_size)
        self.self_attn = RelativePositionSelfAttention(hidden_size, num_heads, dropout, max_length)
        self.layer_norm2 = nn.LayerNorm(hidden_size)
        self.ffn = FeedForward(hidden_size, intermediate_size, dropout)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x), key_mask)
        return x + self.ffn(self.layer_norm2(x))


class ContextualEncoder(nn.Module):
    """A stack of :class:`TransformerLayer` over (batch, time, hidden)."""

    def __init__(self, hidden_size: int, intermediate_size: int, num_heads: int, num_layers: int,
                 dropout: float, max_length: int):
        super().__init__()
        self.layers = nn.ModuleList(
            TransformerLayer(hidden_size, intermediate_size, num_heads, dropout, max_length) for _ in range(num_layers)
        )

    def forward(self, hidden: torch.Tensor, lengths: torch.Tensor, num_layers: int | None = None) -> torch.Tensor:
        """Run the first ``num_layers`` layers (all by default); frames past ``lengths`` are masked as keys."""
        key_mask = length_mask(lengths, hidden.shape[1])
        for layer in self.layers[:num_layers]:
            hidden = layer(hidden, key_mask)
        return hidden


class Encoder(nn.Module):
    """Feature extractor + contextual encoder: (batch, n_mels, frames) -> (batch, frames // 2, hidden)."""

    def __init__(self, config):
        super().__init__()
        self.feature_extractor = FeatureExtractor(FrontendConfig.n_mels, config.hidden_size)
        self.contextual_encoder = ContextualEncoder(
            config.hidden_size, config.intermediate_size, config.num_attention_heads,
            config.num_transformer_layers, config.dropout_probability, config.max_length,
        )

    def forward(self, log_mel: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden, lengths = self.feature_extractor(log_mel, lengths)
        return self.contextual_encoder(hidden, lengths), lengths
