"""Fixtures every test area needs: torch on one thread, default caches kept out of ~/.cache, and the project's
shared folder."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.builders.paths import SHARED

CACHE_VARIABLES = ("HEAR_EMBED_CACHE", "HEAR_EMBED_EVAL_CACHE")  # weights cache; harness cache (file hashes)


@pytest.fixture(autouse=True)
def one_torch_thread() -> None:
    """Torch on one CPU thread in every test, whatever ran before it (code under test may change the count; the
    machine is shared; subprocesses set their own)."""
    torch.set_num_threads(1)


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
def shared_dir() -> Path:
    """The project's shared read-only folder: $HEAR_EMBED_SHARED, by default ../shared beside the repository."""
    return SHARED
