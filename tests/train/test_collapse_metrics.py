"""Collapse metrics on inputs with known answers."""
from __future__ import annotations

import math

import pytest
import torch

from hear_embed.train.collapse_metrics import codebook_usage, participation_ratio


@pytest.mark.parametrize("codes, used, perplexity", [
    (torch.full((100,), 7), 1, 1.0),  # collapsed: one code
    (torch.arange(512).repeat(3), 512, 512.0),  # uniform over the whole codebook
    (torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]), 4, 4.0),
    (torch.tensor([0, 0, 0, 1]), 2, math.exp(-(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))),
])
def test_codebook_usage(codes, used, perplexity):
    got_used, got_perplexity = codebook_usage(codes.view(2, -1) if codes.numel() % 2 == 0 else codes, num_codes=512)
    assert got_used == used
    assert got_perplexity == pytest.approx(perplexity, rel=1e-9)


def test_codebook_usage_refuses_no_codes():
    with pytest.raises(ValueError, match="at least one code"):
        codebook_usage(torch.zeros(0, dtype=torch.long), 8)


@pytest.mark.parametrize("variances, expected", [
    ([1.0] * 16, 16.0),  # isotropic
    ([1.0] + [0.0] * 15, 1.0),  # a line
    ([4.0, 1.0, 1.0], 36.0 / 18.0),  # (6)^2 / (16 + 1 + 1)
])
def test_participation_ratio_of_known_spectra(variances, expected):
    """Data with exactly the given covariance eigenvalues (orthonormal columns scaled, then rotated)."""
    n, dim = 4096, len(variances)
    generator = torch.Generator().manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(n, dim, generator=generator, dtype=torch.float64))
    basis = (basis - basis.mean(dim=0)) * math.sqrt(n - 1)  # columns nearly orthonormal after centring
    basis, _ = torch.linalg.qr(basis - basis.mean(dim=0))
    data = basis * math.sqrt(n - 1) * torch.tensor(variances, dtype=torch.float64).sqrt()
    rotation, _ = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))
    assert participation_ratio((data @ rotation).float() + 3.0) == pytest.approx(expected, rel=1e-4)


def test_participation_ratio_edge_cases():
    assert participation_ratio(torch.ones(10, 4)) == 0.0
    with pytest.raises(ValueError, match="n >= 2, dim"):
        participation_ratio(torch.ones(1, 4))
