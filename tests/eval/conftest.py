"""Fixtures of the harness tests (eval/): a fresh fake HEAR module per test, and a per-test file-hash cache."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.builders.hear_module import FAKE_MODULE


@pytest.fixture
def private_hash_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """File-hash sidecars (eval.file_hashes) in the test's folder, not in the user's cache."""
    monkeypatch.setenv("HEAR_EMBED_EVAL_CACHE", str(tmp_path / "eval_cache"))


@pytest.fixture
def fake_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """Import name of a fresh copy of the fake module (its call log starts empty)."""
    name = f"fake_hear_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(FAKE_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)
