"""The one seed-mixing helper of training: every derived seed (per sample, per step, per mask) comes from here."""
from __future__ import annotations

import numpy as np


def mixed_seed(*values: int) -> int:
    """A well-mixed 63-bit seed from the given integers (e.g. run seed and sample position)."""
    return int(np.random.SeedSequence(list(values)).generate_state(1, dtype=np.uint64)[0] >> 1)
