"""The test suite's own setup: default caches point into a temporary folder, never ~/.cache."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from eval.file_hashes import default_sidecar_folder
from hear_embed.weights import cache_dir


def test_default_caches_are_temporary_folders(caches_in_temporary_folders, tmp_path_factory):
    home_cache = Path.home() / ".cache"
    base = tmp_path_factory.getbasetemp()
    assert cache_dir() == caches_in_temporary_folders["HEAR_EMBED_CACHE"]
    assert default_sidecar_folder().parent == caches_in_temporary_folders["HEAR_EMBED_EVAL_CACHE"]
    for folder in (cache_dir(), default_sidecar_folder()):
        assert folder.is_relative_to(base) and not folder.is_relative_to(home_cache)
    child = subprocess.run([sys.executable, "-c", "import os; print(os.environ['HEAR_EMBED_EVAL_CACHE'])"],
                           capture_output=True, text=True, check=True)
    assert child.stdout.strip() == os.environ["HEAR_EMBED_EVAL_CACHE"]
