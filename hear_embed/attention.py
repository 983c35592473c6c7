"""Shaw-style relative-position multi-head self-attention (Shaw et al., 2018), as in the HEAR reference.

score[i, j] = ((q_i + u) . k_j + (q_i + v) . Rk[j - i]) / sqrt(d)
out_i       = sum_j p[i, j] (v_j + Rv[j - i])

with two learned query biases u (``query_bias1``, content) and v (``query_bias2``, position) and two
learned tables Rk, Rv of 2 * max_length rows indexed by ``j - i + max_length``. Padded keys get the
dtype's minimum score.

Two paths compute the same numbers:

- ``plain``: the reference's math as written; builds a (time, time, head_size) table per side and layer.
- ``fast`` (the default): scores the position query against the 2 * time table rows that can occur,
  (batch, heads, time, 2 time), and re-indexes that by offset with a zero-copy "skew" view; on the value
  side the probabilities are summed per offset ("unskew", two pads) and multiplied with the table once.

``default_path`` selects the path of every attention module whose ``path`` attribute is None;
``set_attention_path(model, "plain")`` sets it on all attention modules of a model.
"""
from __future__ import annotations

import math

import torch
from torch import nn

PATHS = ("plain", "fast")
default_path = "fast"


def skew(by_offset: torch.Tensor) -> torch.Tensor:
    """(..., T, 2T) scores by offset, column c holding offset c - T -> (..., T, T) view whose [i, j] is
    column j - i + T of row i. No copy: row i of the flattened input starting at i * (2T - 1) + T."""
    length = by_offset.shape[-2]
    flat = by_offset.flatten(-2)[..., length: length + length * (2 * length - 1)]
    return flat.unflatten(-1, (length, 2 * length - 1))[..., :length]


def unskew(probs: torch.Tensor) -> torch.Tensor:
    """(..., T, T) probabilities -> (..., T, 2T) with [i, j - i + T] = probs[i, j], zero elsewhere
    (the inverse placement of :func:`skew`, built with two pads)."""
    length = probs.shape[-1]
    rows = nn.functional.pad(probs, (0, length - 1))  # (..., T, 2T - 1)
    flat = nn.functional.pad(rows.flatten(-2), (length, 0))  # (..., 2 T^2)
    return flat.unflatten(-1, (length, 2 * length))


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

    def by_offset(self, length: int) -> torch.Tensor:
        """(2 length, head_size) view of the table: row c holds offset c - length (-length .. length - 1)."""
        start = self.max_length - length
        return self.positional_embedding.weight[start: start + 2 * length]


class RelativePositionSelfAttention(nn.Module):
    """Multi-head self-attention with relative positions; parameter names follow the reference.

    ``path`` ("plain", "fast" or None for the module-level ``default_path``) selects the computation."""

    def __init__(self, hidden_size: int, num_heads: int, dropout: float, max_length: int):
        super().__init__()
        self.num_heads = num_heads
        self.head_size = hidden_size // num_heads
        self.max_length = max_length
        self.path: str | None = None
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
        if length > self.max_length:
            raise ValueError(f"sequence of {length} frames is longer than the relative-position tables allow "
                             f"({self.max_length} frames, offsets -{self.max_length}..{self.max_length - 1}); "
                             f"use the Acoustic Model's sliding window")
        path = self.path or default_path
        if path not in PATHS:
            raise ValueError(f"attention path must be one of {PATHS}, got {path!r}")
        query = self._heads(self.linear_q(hidden))
        key = self._heads(self.linear_k(hidden))
        value = self._heads(self.linear_v(hidden))
        attend = self._attend_plain if path == "plain" else self._attend_fast
        out = attend(query, key, value, key_mask)  # (batch, heads, time, head_size)
        return self.linear_out(out.transpose(1, 2).reshape(batch, length, hidden_size))

    def _probabilities(self, scores: torch.Tensor, key_mask: torch.Tensor | None) -> torch.Tensor:
        """Unscaled scores (batch, heads, time, time) -> dropped-out attention probabilities."""
        scores = scores / math.sqrt(self.head_size)
        if key_mask is not None:
            scores = scores.masked_fill(~key_mask[:, None, None, :], torch.finfo(scores.dtype).min)
        return self.dropout(torch.softmax(scores, dim=-1))

    def _attend_plain(self, query, key, value, key_mask):
        """The reference math with (time, time, head_size) position tables."""
        length = query.shape[2]
        rel_k = self.relative_position_k.pairwise(length)  # (time_q, time_k, head_size)
        scores = torch.matmul(query + self.query_bias1[:, None, :], key.transpose(-1, -2))
        scores = scores + torch.einsum("bhid,ijd->bhij", query + self.query_bias2[:, None, :], rel_k)
        probs = self._probabilities(scores, key_mask)
        rel_v = self.relative_position_v.pairwise(length)
        return torch.matmul(probs, value) + torch.einsum("bhij,ijd->bhid", probs, rel_v)

    def _attend_fast(self, query, key, value, key_mask):
        """Same numbers with position scores (batch, heads, time, 2 time) re-indexed by offset."""
        length = query.shape[2]
        rel_k = self.relative_position_k.by_offset(length)  # (2 time, head_size)
        position_scores = torch.matmul(query + self.query_bias2[:, None, :], rel_k.T)
        scores = torch.matmul(query + self.query_bias1[:, None, :], key.transpose(-1, -2)) + skew(position_scores)
        probs = self._probabilities(scores, key_mask)
        rel_v = self.relative_position_v.by_offset(length)
        return torch.matmul(probs, value) + torch.matmul(unskew(probs), rel_v)


def set_attention_path(model: nn.Module, path: str | None) -> nn.Module:
    """Set ``path`` ("plain", "fast", or None for ``default_path``) on every attention module of ``model``."""
    if path is not None and path not in PATHS:
        raise ValueError(f"attention path must be one of {PATHS} or None, got {path!r}")
    for module in model.modules():
        if isinstance(module, RelativePositionSelfAttention):
            module.path = path
    return model
