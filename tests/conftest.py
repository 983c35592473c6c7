"""Shared test fixtures: paths to the reference-parity fixtures shipped in tests/fixtures; caches kept out of ~/.cache."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

FIXTURES = Path(__file__).parent / "fixtures" / "official_parity"
SHARED_FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "official_parity"


CACHE_VARIABLES = ("HEAR_EMBED_CACHE", "HEAR_EMBED_EVAL_CACHE")  # weights cache; harness cache (file hashes)


@pytest.fixture(scope="session", autouse=True)
def caches_in_temporary_folders(tmp_path_factory) -> dict[str, Path]:
    """Point every default cache at one temporary folder per test session (subprocesses inherit it), so the suite
    never writes into ~/.cache; no test relies on a cache left by another module or run."""
    folders = {name: tmp_path_factory.mktemp(name.lower()) for name in CACHE_VARIABLES}
    with pytest.MonkeyPatch.context() as patch:
        for name, folder in folders.items():
            patch.setenv(name, str(folder))
        yield folders


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
