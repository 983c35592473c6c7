"""Content hashes of files (audio, weights), remembered between runs so unchanged files are not re-read.

A file's BLAKE2b digest is stored in a small JSON sidecar under the harness cache, next to the file's
(device, inode, size, mtime_ns, ctime_ns). A later lookup reuses the digest only when all of them match: any write
changes ctime, even when mtime is forged back with ``os.utime``, so a changed byte is never served. A file whose
ctime is younger than ``RACY_SECONDS`` is hashed but not remembered: a second write within the same clock tick
could leave every field equal (git's "racily clean" problem).
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

from hear_embed.atomic_files import write_json_atomically

SIDECAR_FORMAT = 2
RACY_SECONDS = 2.0
CHUNK_BYTES = 1 << 20


def blake2b_of_file(path: str | os.PathLike) -> str:
    """Hex BLAKE2b (256-bit) of the file's bytes, read in 1 MiB chunks."""
    digest = hashlib.blake2b(digest_size=32)
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def _stat_key(stat: os.stat_result) -> list[int]:
    return [stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]


def default_sidecar_folder() -> Path:
    """Where sidecars live: ``file_hashes/`` in the harness cache (``$HEAR_EMBED_EVAL_CACHE``)."""
    from eval.suites.mini import default_cache_dir

    return default_cache_dir() / "file_hashes"


class FileHashes:
    """Digests of the files under ``folder``, remembered in one sidecar per folder (in ``sidecar_folder``,
    default :func:`default_sidecar_folder`).

    Use as a context manager, or call :meth:`save`: new digests are written back atomically; a sidecar that
    cannot be read or written only costs a re-read, never a wrong digest.
    """

    def __init__(self, folder: Path, sidecar_folder: Path | None = None):
        self.folder = Path(folder).resolve()
        sidecar_folder = default_sidecar_folder() if sidecar_folder is None else Path(sidecar_folder)
        name = hashlib.sha256(str(self.folder).encode()).hexdigest()[:24]
        self.sidecar = sidecar_folder / f"{name}.json"
        self.entries: dict[str, list] = self._load()
        self.changed = False

    def _load(self) -> dict[str, list]:
        try:
            data = json.loads(self.sidecar.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(data, dict) or data.get("format") != SIDECAR_FORMAT or data.get("folder") != str(self.folder):
            return {}
        entries = data.get("files")
        return entries if isinstance(entries, dict) else {}

    def digest(self, path: str | os.PathLike) -> str:
        """BLAKE2b of ``path``'s bytes, from the sidecar when its stat key is unchanged (OSError if unreadable)."""
        name = os.path.abspath(path)
        before = _stat_key(os.stat(path))
        remembered = self.entries.get(name)
        if isinstance(remembered, list) and remembered[:-1] == before and isinstance(remembered[-1], str):
            return remembered[-1]
        digest = blake2b_of_file(path)
        after = os.stat(path)
        if _stat_key(after) == before and time.time() - after.st_ctime_ns / 1e9 >= RACY_SECONDS:
            self.entries[name] = [*before, digest]
            self.changed = True
        return digest

    def save(self) -> None:
        if not self.changed:
            return
        try:
            write_json_atomically(self.sidecar, {"format": SIDECAR_FORMAT, "folder": str(self.folder),
                                                 "files": self.entries}, indent=None)
        except OSError:  # a read-only cache: the digests are simply computed again next time
            return
        self.changed = False

    def __enter__(self) -> "FileHashes":
        return self

    def __exit__(self, *exc_info) -> None:
        self.save()
