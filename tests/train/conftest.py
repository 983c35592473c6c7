"""Fixtures of the training tests (hear_embed/train/): a manifest of real shipped training clips."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.builders.training import training_clips, write_manifest


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Path:
    """A manifest file listing 8 shipped FSDD training clips (one per test module)."""
    return write_manifest(tmp_path_factory.mktemp("data"), training_clips(8))
