"""Atomic file writes: a reader sees the old file or the complete new one, never a part of one.

Every writer in hear_embed and eval goes through here. The data goes to a temporary file beside the target
(same folder, so the rename cannot cross file systems), is flushed and fsynced, gets the permissions a plain
``open(path, "w")`` would give (mkstemp makes 0600 files), and is renamed over the target; the folder is
fsynced so the rename survives a crash. On any error the temporary file is removed and the target is untouched.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator


def _default_file_mode() -> int:
    """0o666 minus the process umask: the mode ``open(path, "w")`` would create a file with."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def _fsync_folder(folder: Path) -> None:
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:  # some file systems do not open folders; the rename itself has happened
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for a writer that takes a file name (torch.save, np.savez, onnx).

    The temporary name ends with ``path``'s suffix, so writers that add a missing suffix do not rename it.
    When the block ends without error the file is fsynced, given the default mode and renamed onto ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}")
    os.close(handle)
    temporary = Path(temporary)
    try:
        yield temporary
        with open(temporary, "rb+") as written:
            os.fsync(written.fileno())
        os.chmod(temporary, _default_file_mode())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_folder(path.parent)


def write_atomically(path: str | Path, write: Callable[[BinaryIO], Any]) -> Path:
    """Call ``write(binary_file)`` on a temporary file beside ``path``, then put it in place atomically."""
    with atomic_path(path) as temporary, open(temporary, "wb") as out:
        write(out)
    return Path(path)


def write_bytes_atomically(path: str | Path, data: bytes) -> Path:
    return write_atomically(path, lambda out: out.write(data))


def write_text_atomically(path: str | Path, text: str) -> Path:
    return write_bytes_atomically(path, text.encode("utf-8"))


def write_json_atomically(path: str | Path, value: Any, *, indent: int | None = 1, allow_nan: bool = False) -> Path:
    """``value`` as JSON with sorted keys; NaN/Infinity refused unless ``allow_nan`` (strict JSON readers fail on them)."""
    return write_text_atomically(path, json.dumps(value, indent=indent, sort_keys=True, allow_nan=allow_nan) + "\n")
