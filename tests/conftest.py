"""Shared test fixtures: paths to the reference-parity fixtures shipped in tests/fixtures."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).parent / "fixtures" / "official_parity"
SHARED_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "official_parity"


@pytest.fixture(scope="session")
def parity_dir() -> Path:
    return FIXTURES


@pytest.fixture(scope="session")
def reference() -> dict[str, np.ndarray]:
    """Inputs and outputs of the authors' reference code (see tests/fixtures/official_parity/README.md)."""
    with np.load(FIXTURES / "reference_outputs.npz") as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="session")
def small_configs() -> dict:
    return json.loads((FIXTURES / "small_configs.json").read_text())


@pytest.fixture(scope="session")
def manifest() -> dict:
    return json.loads((FIXTURES / "full_size_manifest.json").read_text())
