"""Collapse diagnostics logged while training: codebook usage and embedding participation ratio.

A tokenizer that collapses uses few codes (low perplexity); an encoder whose embeddings collapse spreads their
variance over few directions (low participation ratio). Both are cheap enough to compute on every batch.
"""
from __future__ import annotations

import torch


def codebook_usage(codes: torch.Tensor, num_codes: int) -> tuple[int, float]:
    """codes: integer tensor of any shape (valid frames only) -> (distinct codes used, perplexity), where
    perplexity = exp(entropy of the code histogram): 1 for a single code, ``num_codes`` for uniform use."""
    if codes.numel() == 0:
        raise ValueError("codebook_usage needs at least one code")
    counts = torch.bincount(codes.flatten().long(), minlength=num_codes).double()
    probability = counts / counts.sum()
    nonzero = probability[probability > 0]
    entropy = -(nonzero * nonzero.log()).sum()
    return int((counts > 0).sum()), float(entropy.exp())


def participation_ratio(embeddings: torch.Tensor) -> float:
    """(n, dim) embeddings -> (sum of covariance eigenvalues)^2 / sum of their squares: the effective number of
    dimensions the variance spreads over (1 for points on a line, dim for isotropic data); 0 for constant input."""
    if embeddings.ndim != 2 or embeddings.shape[0] < 2:
        raise ValueError(f"participation_ratio needs (n >= 2, dim) embeddings, got shape {tuple(embeddings.shape)}")
    centred = embeddings.double() - embeddings.double().mean(dim=0)
    covariance = centred.T @ centred / (embeddings.shape[0] - 1)
    trace, squared = torch.trace(covariance), (covariance * covariance).sum()  # sum of eigenvalues, of their squares
    return float(trace * trace / squared) if squared > 0 else 0.0
