"""hear_embed.atomic_files: complete-or-absent writes with the umask's permissions."""
from __future__ import annotations

import os
import stat

import numpy as np
import pytest

from hear_embed.atomic_files import atomic_path, write_bytes_atomically, write_json_atomically, write_text_atomically


def test_writes_and_replaces(tmp_path):
    target = tmp_path / "deep" / "x.txt"
    write_text_atomically(target, "one")
    write_text_atomically(target, "two")
    assert target.read_text() == "two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.txt"]


def test_failed_write_leaves_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "x.bin"
    write_bytes_atomically(target, b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as temporary:
            temporary.write_bytes(b"half")
            raise RuntimeError("killed")
    assert target.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["x.bin"]


def test_mode_follows_umask(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_bytes_atomically(tmp_path / "a", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_temporary_keeps_suffix_for_writers_that_add_one(tmp_path):
    target = tmp_path / "arrays.npz"
    with atomic_path(target) as temporary:
        np.savez(temporary, a=np.arange(3))
    assert np.load(target)["a"].tolist() == [0, 1, 2]
    assert [p.name for p in tmp_path.iterdir()] == ["arrays.npz"]


def test_json_refuses_nan(tmp_path):
    with pytest.raises(ValueError):
        write_json_atomically(tmp_path / "x.json", {"a": float("nan")})
    assert not list(tmp_path.iterdir())
