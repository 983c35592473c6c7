"""Shaw-style relative-position multi-head self-attention (Shaw et al., 2018), as in the HEAR reference.

score[i, j] = ((q_i + u) . k_j + (q_i + v) . Rk[j - i]) / sqrt(d)
out_i       = sum_j p[i, j] (v_j + Rv[j - i])

with two learned query biases u (``query_bias1``, content) and v (``query_bias2``, position) and two
learned tables Rk, Rv of 2 * max_length rows indexed by ``j - i + max_length``. Padded keys get the
dtype's minimum score.
"""
from __future__ import annotations

import math

import torch
from torch import nn


class RelativePositionTable(nn.Module):
    """A learned vector per relative offset j - i in [-max_length, max_length)."""

    def __init__(self, head_size: int, max_length: int):
        super().__init__()
        self.max_length = max_length
        self.positional_embedding = nn.Embedding(2 * max_length, head_size)

    def pairwise(self, length: int) -> torch.Tensor:
        """(length, length, head_size): row i, column j holds the vector of offset j - i."""
        positions = torch.arange(length, device=self.positional_embedding.weight.device)
        offsets = positions[None, :] - positions[:, None] + self.max_length
        return self.positional_embedding(offsets)


class RelativePositionSelfAttention(nn.Module):
    """Multi-head self-attention with relative positions; parameter names follow the reference."""

    def __init__(self, hidden_size: int, num_heads: int, dropout: float, max_length: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_size = hidden_size // num_heads
        self.max_length = max_length
        self.linear_q = nn.Linear(hidden_size, hidden_size)
        self.linear_k = nn.Linear(hidden_size, hidden_size)
        self.linear_v = nn.Linear(hidden_size, hidden_size)
        self.linear_out = nn.Linear(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.relative_position_k = RelativePositionTable(self.head_size, max_length)
        self.relative_position_v = RelativePositionTable(self.head_size, max_length)
        self.query_bias1 = nn.Parameter(torch.zeros(num_heads, self.head_size))
        self.query_bias2 = nn.Parameter(torch.zeros(num_heads, self.head_size))
        for linear in (self.linear_q, self.linear_k, self.linear_v):
            nn.init.xavier_uniform_(linear.weight)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """(batch, time, hidden) -> (batch, heads, time, head_size)."""
        batch, length, _ = x.shape
        return x.view(batch, length, self.num_heads, self.head_size).transpose(1, 2)

    def forward(self, hidden: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        """hidden (batch, time, hidden_size), key_mask (batch, time) True where valid -> (batch, time, hidden_size)."""
        batch, length, hidden_size = hidden.shape
        if length > self.max_length + 1:
            raise ValueError(f"sequence of {length} frames is longer than the relative-position tables allow "
                             f"({self.max_length + 1}); use the Acoustic Model's sliding window")
        query = self._heads(self.linear_q(hidden))
        key = self._heads(self.linear_k(hidden))
        value = self._heads(self.linear_v(hidden))
        content_query = query + self.query_bias1[:, None, :]
        position_query = query + self.query_bias2[:, None, :]

        rel_k = self.relative_position_k.pairwise(length)  # (time_q, time_k, head_size)
        scores = torch.matmul(content_query, key.transpose(-1, -2))
        scores = scores + torch.einsum("bhid,ijd->bhij", position_query, rel_k)
        scores = scores / math.sqrt(self.head_size)
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask[:, None, None, :], torch.finfo(scores.dtype).min)
        probs = self.dropout(torch.softmax(scores, dim=-1))

        rel_v = self.relative_position_v.pairwise(length)
        out = torch.matmul(probs, value) + torch.einsum("bhij,ijd->bhid", probs, rel_v)
        out = out.transpose(1, 2).reshape(batch, length, hidden_size)
        return self.linear_out(out)
