"""Named weights: where they come from, download-once-and-verify into a cache, and the one door that turns
a source ("authors", "tiny", "random" or a file) into a model in eval mode.

Downloads use only the standard library, resume an interrupted ``.part`` file with an HTTP Range request,
and are verified against the git blob id of the file in its repository (SHA-1 of ``b"blob <size>\\0" +
content``), so the host need not be trusted.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import http.client
import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch
from tqdm import tqdm

from hear_embed.acoustic_model import AcousticModel
from hear_embed.atomic_files import write_json_atomically
from hear_embed.checkpoint import (CheckpointError, check_state_dict, describe_layout, drop_preprocessor_buffers,
                                   infer_acoustic_config, infer_classifier_configs, infer_tokenizer_config,
                                   read_checkpoint, save_checkpoint, select_module)
from hear_embed.config import AcousticModelConfig, TokenizerConfig, config_from_dict
from hear_embed.heads import HEARClassifier
from hear_embed.tokenizer import AcousticTokenizer

CACHE_ENV = "HEAR_EMBED_CACHE"
TIMEOUT_S = 10.0  # per connect / read: fail fast when offline
DEADLINE_S = 900.0  # a whole download (45 MB at 50 kB/s); past it the .part is kept for the next call
ATTEMPTS = 3  # tries per fetch; a try cut off mid-transfer is resumed by the next one
PACKAGED = Path(__file__).parent / "checkpoints"
PACKAGED_FILES = {"acoustic_model": "tiny.pt", "tokenizer": "tiny_tokenizer.pt"}
TINY_LICENSE = ("MIT (trained by this project; training data: FSDD, CC BY-SA 4.0, and synthetic clips made here; "
                "teacher CREPE tiny, MIT; see hear_embed/checkpoints/MODEL_CARD.md)")


class FetchError(OSError):
    """A file could not be downloaded; the message says what to get from where, and where to put it."""


class ChecksumError(ValueError):
    """A file's git blob id is not the expected one."""


@dataclass(frozen=True)
class WeightsBundle:
    """One released weights file, pinned to a commit and identified by its git blob id."""

    name: str
    repo: str
    commit: str
    path: str  # inside the repository
    url: str
    blob_id: str  # SHA-1 of b"blob <size>\0" + content, as `git hash-object` prints
    license: str
    description: str
    max_size: int = 1 << 28  # bytes; a server sending more is cut off (the file size itself is not published)

    @property
    def filename(self) -> str:
        """Name of the verified file in the cache."""
        return f"{self.name}-{self.blob_id[:10]}{Path(self.path).suffix}"


def _github_bundle(name: str, path: str, blob_id: str, description: str, max_size: int) -> WeightsBundle:
    repo, commit = "HarunoriKawano/HEAR", "8dd121641a158ebdb9a09d7fb56a91892df012f7"
    return WeightsBundle(name=name, repo=repo, commit=commit, path=path, blob_id=blob_id, license="MIT",
                         url=f"https://raw.githubusercontent.com/{repo}/{commit}/{path}", description=description,
                         max_size=max_size)


AUTHORS_ACOUSTIC_MODEL = _github_bundle(
    "authors_acoustic_model", "models/acoustic_model_weight.pth", "4a91121158c65c09b9027d8c253f37ee7703ca66",
    "the authors' pretrained Acoustic Model (11.4M parameters, Kawano & Sasaki 2026)",
    max_size=64 << 20)  # 11,445,888 float32 parameters are 45.8 MB
AUTHORS_TOKENIZER = _github_bundle(
    "authors_tokenizer", "models/tokenizer_weight.pth", "ae1345215a08acc2187e9096d93acd414205ca58",
    "the authors' pretrained Acoustic Tokenizer (Kawano & Sasaki 2026)",
    max_size=16 << 20)  # 1,588,096 float32 parameters are 6.4 MB
AUTHORS_BUNDLES = {"acoustic_model": AUTHORS_ACOUSTIC_MODEL, "tokenizer": AUTHORS_TOKENIZER}


@dataclass(frozen=True)
class WeightsInfo:
    """Where a model's weights came from and how the file was laid out."""

    source: str  # "authors", "tiny", "random" or the path given
    path: Path | None  # the file read (None for "random")
    layout: str  # e.g. "authors state_dict", "wrapped under 'model', prefix 'module.'", "hear_embed v1"
    blob_id: str | None  # git blob id of the file
    config: object  # the model's config dataclass(es)
    meta: dict = field(default_factory=dict)
    license: str = "not recorded for this source"


def cache_dir() -> Path:
    """``$HEAR_EMBED_CACHE`` if set, else ``~/.cache/hear_embed``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "hear_embed").expanduser()


def git_blob_sha1(path: str | Path) -> str:
    """Git blob id of a file: SHA-1 of ``b"blob <size>\\0"`` + content, read in 1 MiB chunks."""
    path = Path(path)
    digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _marker(target: Path) -> Path:
    return target.with_name(target.name + ".verified")


def _stamp(target: Path, blob_id: str) -> dict:
    """What a verification vouches for: the id it checked and the file's identity. ``ctime`` changes with any
    write or ``utime`` and cannot be set back, so a file rewritten with the same size and mtime is hashed again."""
    stat = target.stat()
    return {"blob_id": blob_id, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "ctime_ns": stat.st_ctime_ns,
            "inode": stat.st_ino, "device": stat.st_dev}


_VERIFIED_THIS_PROCESS: list[dict] = []  # stamps verified here whose marker could not be written (read-only cache)


def _is_verified(target: Path, blob_id: str) -> bool:
    """True if the marker (or this process) vouches for ``target`` as it is now: no re-hash needed."""
    stamp = _stamp(target, blob_id)
    if stamp in _VERIFIED_THIS_PROCESS:
        return True
    try:
        return json.loads(_marker(target).read_text()) == stamp
    except (OSError, ValueError):
        return False


def _verify_cached(target: Path, bundle: WeightsBundle) -> Path:
    """``target`` if its git blob id is the bundle's (hashed at most once per change); the marker is written if
    the cache is writable, else remembered in this process, so a read-only cache with the right file works."""
    if _is_verified(target, bundle.blob_id):
        return target
    actual = git_blob_sha1(target)
    if actual != bundle.blob_id:
        raise ChecksumError(f"{target}: git blob id {actual}, expected {bundle.blob_id} "
                            f"({bundle.repo}@{bundle.commit}:{bundle.path}); delete or replace the file")
    stamp = _stamp(target, bundle.blob_id)
    try:
        write_json_atomically(_marker(target), stamp)
    except OSError:
        _VERIFIED_THIS_PROCESS.append(stamp)
    return target


class _DownloadStopped(Exception):
    """A download stopped for a reason retrying cannot fix (deadline, size cap); the message says which."""


def _download(url: str, part: Path, label: str, max_size: int, deadline: float) -> None:
    """Append to ``part`` from its current size (Range request); restart if the server ignores Range.
    Raises ConnectionError if the body ends early (``part`` keeps what arrived), :class:`_DownloadStopped` past
    ``deadline`` (time.monotonic) or beyond ``max_size`` bytes (``part`` is deleted)."""
    start = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={start}-"} if start else {})
    try:
        response = urllib.request.urlopen(request, timeout=TIMEOUT_S)
    except urllib.error.HTTPError as error:
        if error.code == 416 and start:  # nothing left to send: the .part is complete
            return
        raise
    with response:
        resumed = start > 0 and response.status == 206
        if resumed and not response.headers.get("Content-Range", "").startswith(f"bytes {start}-"):
            part.unlink()  # a partial answer for another range: start over on the next try
            raise ConnectionError(f"server answered Range bytes={start}- with {response.headers['Content-Range']}")
        start = start if resumed else 0
        length = response.headers.get("Content-Length")
        total = start + int(length) if length is not None else None
        if total is not None and total > max_size:
            raise _DownloadStopped(f"the server announces {total} bytes, more than the {max_size} expected at most")
        size = start
        with open(part, "ab" if resumed else "wb") as out, tqdm(
                total=total, initial=start, unit="B", unit_scale=True, desc=label, disable=None) as bar:
            while chunk := response.read1(1 << 16):  # one socket read at a time: a dripping server is noticed
                size += len(chunk)
                if size > max_size:
                    part.unlink()
                    raise _DownloadStopped(f"the server sent more than the {max_size} bytes expected at most; "
                                           "stopped and deleted what arrived")
                out.write(chunk)
                bar.update(len(chunk))
                if time.monotonic() > deadline:
                    raise _DownloadStopped(f"too slow: {size} bytes arrived within the {DEADLINE_S:.0f} s allowed "
                                           f"({part} is kept and resumed next time)")
    if total is not None and part.stat().st_size < total:
        raise ConnectionError(f"connection closed after {part.stat().st_size} of {total} bytes")


def _fetch_error(bundle: WeightsBundle, url: str, target: Path, reason: str) -> FetchError:
    return FetchError(
        f"could not download {bundle.description} ({reason}).\n"
        f"Get file '{bundle.path}' of github.com/{bundle.repo} at commit {bundle.commit}\n"
        f"  from {url}\n"
        f"and save it as {target}\n"
        f"(git blob id {bundle.blob_id}; {bundle.license} license), or point {CACHE_ENV} at a folder holding it.")


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive lock (fcntl.flock) on ``folder`` for the block: one process downloads, the others wait."""
    handle = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield
    finally:
        os.close(handle)  # releases the lock


def fetch(bundle: WeightsBundle, cache: str | Path | None = None, url: str | None = None) -> Path:
    """Path of ``bundle``'s verified file in the cache, downloading it (from ``url`` if given) the first time.

    Processes sharing a cache take turns (a lock on the cache folder); a read-only cache holding the right file
    is used as it is. A download stops at ``bundle.max_size`` bytes, after ``DEADLINE_S`` seconds in all, or
    after ``TIMEOUT_S`` seconds without data (then retried from where it stopped, ``ATTEMPTS`` tries)."""
    cache, url = Path(cache) if cache is not None else cache_dir(), url or bundle.url
    target = cache / bundle.filename
    if target.is_file():
        return _verify_cached(target, bundle)
    try:
        cache.mkdir(parents=True, exist_ok=True)
        if not os.access(cache, os.W_OK):
            raise PermissionError(errno.EACCES, "not writable", str(cache))
    except OSError as error:
        raise _fetch_error(bundle, url, target, f"the cache folder {cache} cannot be written: "
                           f"{error.strerror or error}") from error
    with _locked(cache):
        if target.is_file():  # another process fetched it while this one waited
            return _verify_cached(target, bundle)
        part = target.with_name(target.name + ".part")
        deadline = time.monotonic() + DEADLINE_S
        for attempt in range(ATTEMPTS):
            try:
                _download(url, part, bundle.name, bundle.max_size, deadline)
                break
            except urllib.error.URLError as error:  # no connection or an HTTP error status: no point retrying
                raise _fetch_error(bundle, url, target, f"{type(error).__name__}: {error}") from error
            except _DownloadStopped as error:
                raise _fetch_error(bundle, url, target, str(error)) from error
            except PermissionError as error:
                raise _fetch_error(bundle, url, target, f"cannot write {error.filename}: {error.strerror}") from error
            except (OSError, http.client.HTTPException) as error:  # cut off mid-transfer: resume from the .part
                if attempt == ATTEMPTS - 1:
                    raise _fetch_error(bundle, url, target, f"interrupted {ATTEMPTS} times, last: {error}; "
                                       f"{part} is kept and resumed next time") from error
        actual = git_blob_sha1(part)
        if actual != bundle.blob_id:
            part.unlink()
            raise ChecksumError(f"download of {url} has git blob id {actual}, expected {bundle.blob_id} "
                                f"({bundle.repo}@{bundle.commit}:{bundle.path}); the file was deleted")
        os.replace(part, target)
        write_json_atomically(_marker(target), _stamp(target, bundle.blob_id))
    return target


def _resolve(source: str | Path | None, kind: str) -> tuple[str, Path, str | None, dict]:
    """(source label, file, known blob id, provenance meta) of a non-random source."""
    if source is None or source == "authors":
        bundle = AUTHORS_BUNDLES[kind]
        meta = {"repo": bundle.repo, "commit": bundle.commit, "path": bundle.path, "url": bundle.url,
                "license": bundle.license}
        return "authors", fetch(bundle), bundle.blob_id, meta
    if source == "tiny":
        path = PACKAGED / PACKAGED_FILES[kind]
        if not path.is_file():
            raise FileNotFoundError(f"the packaged tiny {kind} checkpoint {path} is not built yet "
                                    "(it is produced by the project's training pipeline)")
        return "tiny", path, None, {}
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"weights source {str(source)!r} is neither 'authors', 'tiny', 'random' "
                                "nor an existing checkpoint file")
    return str(source), path, None, {}


def _load(kind: str, source: str | Path | None, config_cls: type, infer, model_cls: type):
    """Build ``model_cls`` for ``source``: config from the file if it holds one, else inferred from shapes."""
    if source in ("random", "random-tiny"):  # the paper's / the tiny model's architecture, untrained
        config = config_cls()
        if source == "random-tiny":
            config = config_from_dict(config_cls, read_checkpoint(_resolve("tiny", kind)[1]).config)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = model_cls(config)
        return model.eval(), WeightsInfo(source, None, "random init (torch.manual_seed(0))", None, config)
    label, path, blob_id, meta = _resolve(source, kind)
    checkpoint = read_checkpoint(path)
    if checkpoint.kind not in (None, kind):
        raise CheckpointError(f"{path}: holds a hear_embed {checkpoint.kind!r} checkpoint, not {kind!r}")
    state_dict, prefix, ignored = select_module(checkpoint.state_dict, kind, path)
    if checkpoint.config is not None:
        try:
            config = config_from_dict(config_cls, checkpoint.config)
        except (TypeError, ValueError) as error:
            raise CheckpointError(f"{path}: bad config in the file: {error}") from error
    else:
        config = infer(state_dict, str(path))
    model = model_cls(config)
    check_state_dict(model, state_dict, path)
    model.load_state_dict(state_dict, strict=True)
    layout = describe_layout(checkpoint.layout, prefix, ignored)
    meta = {**checkpoint.meta, **meta}
    license = TINY_LICENSE if label == "tiny" else meta.get("license", WeightsInfo.license)
    info = WeightsInfo(label, path, layout, blob_id or git_blob_sha1(path), config, meta, str(license))
    return model.eval(), info


def load_acoustic_model(source: str | Path | None = None) -> tuple[AcousticModel, WeightsInfo]:
    """AcousticModel in eval mode from ``source``: None/"authors" (downloaded once, verified), "tiny" (packaged),
    "random" (paper config, ``torch.manual_seed(0)`` init), "random-tiny" (the tiny config, same init) or a
    checkpoint file in any accepted layout."""
    return _load("acoustic_model", source, AcousticModelConfig, infer_acoustic_config, AcousticModel)


def load_tokenizer(source: str | Path | None = None) -> tuple[AcousticTokenizer, WeightsInfo]:
    """AcousticTokenizer in eval mode; sources as :func:`load_acoustic_model` (bundle: the authors' tokenizer)."""
    return _load("tokenizer", source, TokenizerConfig, infer_tokenizer_config, AcousticTokenizer)


def load_classifier(path: str | Path) -> tuple[HEARClassifier, WeightsInfo]:
    """HEARClassifier in eval mode from a full classifier checkpoint (the reference's ``preprocessor.*``
    buffers are checked against our Frontend and dropped); configs inferred from shapes."""
    path = Path(path)
    checkpoint = read_checkpoint(path)
    state_dict, prefix, ignored = select_module(checkpoint.state_dict, "classifier", path)
    configs = infer_classifier_configs(state_dict, str(path))
    model = HEARClassifier(*configs)
    state_dict = drop_preprocessor_buffers(state_dict, model.frontend, path)
    check_state_dict(model, state_dict, path)
    model.load_state_dict(state_dict, strict=True)
    layout = describe_layout(checkpoint.layout, prefix, ignored)
    return model.eval(), WeightsInfo(str(path), path, layout, git_blob_sha1(path), configs, dict(checkpoint.meta))


__all__ = ["WeightsBundle", "WeightsInfo", "AUTHORS_ACOUSTIC_MODEL", "AUTHORS_TOKENIZER", "CheckpointError",
           "ChecksumError", "FetchError", "cache_dir", "fetch", "git_blob_sha1", "load_acoustic_model",
           "load_classifier", "load_tokenizer", "save_checkpoint"]
