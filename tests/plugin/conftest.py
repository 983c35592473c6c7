"""Fixtures of the plugin tests (hear_embed/): the authors' reference outputs shipped in tests/fixtures."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.builders.paths import PARITY_FIXTURES


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    return PARITY_FIXTURES


@pytest.fixture(scope="session")
def reference() -> dict[str, np.ndarray]:
    """Inputs and outputs of the authors' reference code (see tests/fixtures/official_parity/README.md)."""
    with np.load(PARITY_FIXTURES / "reference_outputs.npz") as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="session")
def small_configs() -> dict:
    return json.loads((PARITY_FIXTURES / "small_configs.json").read_text())


@pytest.fixture(scope="session")
def manifest() -> dict:
    return json.loads((PARITY_FIXTURES / "full_size_manifest.json").read_text())
