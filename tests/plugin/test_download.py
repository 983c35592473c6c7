"""Download, verify and cache, against a real HTTP server on 127.0.0.1 serving a small checkpoint."""
from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import time
from dataclasses import replace

import pytest
import torch
from tests.builders.http_server import serve

from hear_embed import weights
from hear_embed.acoustic_model import AcousticModel
from hear_embed.config import AcousticModelConfig
from hear_embed.weights import (AUTHORS_ACOUSTIC_MODEL, AUTHORS_TOKENIZER, ChecksumError, FetchError, WeightsBundle,
                                cache_dir, fetch, git_blob_sha1, load_acoustic_model, save_checkpoint)

CONFIG = AcousticModelConfig(hidden_size=16, intermediate_size=32, num_attention_heads=2,
                             num_transformer_layers=2, max_length=40, overlap=8)


def _blob_id(data: bytes) -> str:
    """Git blob id computed here from bytes in memory, independently of git_blob_sha1."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@pytest.fixture(scope="module")
def model() -> AcousticModel:
    torch.manual_seed(1)
    return AcousticModel(CONFIG)


@pytest.fixture(scope="module")
def payload(model, tmp_path_factory) -> bytes:
    """A small checkpoint file in the project format (about 60 kB)."""
    path = save_checkpoint(model, tmp_path_factory.mktemp("payload") / "small.pt", meta={"purpose": "test"})
    return path.read_bytes()


def _bundle(payload: bytes, url: str) -> WeightsBundle:
    return WeightsBundle(name="test_weights", repo="example/weights", commit="0123456789abcdef" * 2 + "01234567",
                         path="models/weights.pth", url=url, blob_id=_blob_id(payload), license="MIT",
                         description="test weights")


def _dead_url() -> str:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/models/weights.pth"


def test_git_blob_sha1_matches_git(tmp_path, payload):
    (tmp_path / "hello").write_bytes(b"hello\n")
    assert git_blob_sha1(tmp_path / "hello") == "ce013625030ba8dba906f756967f9e9ca394464a"  # git hash-object
    (tmp_path / "payload").write_bytes(payload)
    if shutil.which("git"):
        result = subprocess.run(["git", "hash-object", str(tmp_path / "payload")], capture_output=True, text=True)
        assert git_blob_sha1(tmp_path / "payload") == result.stdout.strip()


def test_first_download_is_verified_and_cached(tmp_path, payload):
    with serve(payload) as server:
        bundle = _bundle(payload, server.url)
        path = fetch(bundle, cache=tmp_path)
    assert path == tmp_path / bundle.filename and path.read_bytes() == payload
    assert git_blob_sha1(path) == bundle.blob_id and len(server.requests) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [bundle.filename, bundle.filename + ".verified"]


def test_cached_file_is_neither_downloaded_nor_hashed_again(tmp_path, payload, monkeypatch):
    with serve(payload) as server:
        bundle = _bundle(payload, server.url)
        first = fetch(bundle, cache=tmp_path)
        monkeypatch.setattr(weights, "git_blob_sha1", lambda path: pytest.fail("re-hashed a verified file"))
        assert fetch(bundle, cache=tmp_path) == first
    assert len(server.requests) == 1


def test_touched_cached_file_is_hashed_once_more_not_downloaded(tmp_path, payload, monkeypatch):
    with serve(payload) as server:
        bundle = _bundle(payload, server.url)
        path = fetch(bundle, cache=tmp_path)
        os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
        hashed = []
        monkeypatch.setattr(weights, "git_blob_sha1", lambda p: hashed.append(p) or _blob_id(p.read_bytes()))
        fetch(bundle, cache=tmp_path)
        fetch(bundle, cache=tmp_path)
    assert hashed == [path] and len(server.requests) == 1


def test_wrong_file_in_cache_is_reported_not_replaced(tmp_path, payload):
    with serve(payload) as server:
        bundle = _bundle(payload, server.url)
        (tmp_path / bundle.filename).write_bytes(payload[:-1])
        with pytest.raises(ChecksumError) as error:
            fetch(bundle, cache=tmp_path)
    assert bundle.blob_id in str(error.value) and _blob_id(payload[:-1]) in str(error.value)
    assert str(tmp_path / bundle.filename) in str(error.value) and not server.requests


def test_tampered_download_is_rejected_and_not_kept(tmp_path, payload):
    tampered = bytearray(payload)
    tampered[len(tampered) // 2] ^= 0xFF
    with serve(bytes(tampered)) as server:
        bundle = _bundle(payload, server.url)
        with pytest.raises(ChecksumError) as error:
            fetch(bundle, cache=tmp_path)
    assert bundle.blob_id in str(error.value) and _blob_id(bytes(tampered)) in str(error.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("honour_range", [True, False])
@pytest.mark.parametrize("interrupted", ["this call", "an earlier process"])
def test_interrupted_download_is_resumed_with_range(tmp_path, payload, honour_range, interrupted):
    half = len(payload) // 2
    with serve(payload, honour_range=honour_range, truncate_first=1 if interrupted == "this call" else 0) as server:
        bundle = _bundle(payload, server.url)
        if interrupted == "an earlier process":
            (tmp_path / (bundle.filename + ".part")).write_bytes(payload[:half])
        path = fetch(bundle, cache=tmp_path)
    ranges = [request.get("Range") for request in server.requests]
    assert ranges == ([None, f"bytes={half}-"] if interrupted == "this call" else [f"bytes={half}-"])
    assert path.read_bytes() == payload and git_blob_sha1(path) == bundle.blob_id
    assert not (tmp_path / (bundle.filename + ".part")).exists()


def test_complete_part_file_is_finished_without_a_body(tmp_path, payload):
    with serve(payload) as server:
        bundle = _bundle(payload, server.url)
        (tmp_path / (bundle.filename + ".part")).write_bytes(payload)
        path = fetch(bundle, cache=tmp_path)  # the server answers 416: nothing left to send
    assert path.read_bytes() == payload and server.requests[0]["Range"] == f"bytes={len(payload)}-"


def test_download_cut_off_every_time_keeps_the_part_file(tmp_path, payload):
    with serve(payload, truncate_first=99) as server:
        bundle = _bundle(payload, server.url)
        with pytest.raises(FetchError, match="interrupted 3 times") as error:
            fetch(bundle, cache=tmp_path)
    part = tmp_path / (bundle.filename + ".part")
    assert len(server.requests) == 3 and 0 < part.stat().st_size < len(payload)
    assert str(tmp_path / bundle.filename) in str(error.value)


@pytest.mark.parametrize("bundle_name", ["authors_acoustic_model", "authors_tokenizer", "test"])
def test_offline_fails_fast_and_says_what_to_get_and_where(tmp_path, payload, bundle_name):
    url = _dead_url()
    bundle = {"authors_acoustic_model": AUTHORS_ACOUSTIC_MODEL, "authors_tokenizer": AUTHORS_TOKENIZER,
              "test": _bundle(payload, url)}[bundle_name]
    start = time.monotonic()
    with pytest.raises(FetchError) as error:
        fetch(bundle, cache=tmp_path, url=url)
    assert time.monotonic() - start < 5
    message = str(error.value)
    for expected in (bundle.repo, bundle.commit, bundle.path, url, str(tmp_path / bundle.filename), bundle.blob_id):
        assert expected in message
    assert not (tmp_path / bundle.filename).exists()


def test_http_error_status_fails_with_the_instructions(tmp_path, payload):
    with serve(payload, status=404) as server:
        bundle = _bundle(payload, server.url)
        with pytest.raises(FetchError, match="404") as error:
            fetch(bundle, cache=tmp_path)
    assert bundle.path in str(error.value) and len(server.requests) == 1


def test_cache_location_comes_from_the_environment(tmp_path, payload, monkeypatch):
    monkeypatch.setenv("HEAR_EMBED_CACHE", str(tmp_path / "env_cache"))
    assert cache_dir() == tmp_path / "env_cache"
    with serve(payload) as server:
        path = fetch(_bundle(payload, server.url))
    assert path.parent == tmp_path / "env_cache"
    monkeypatch.delenv("HEAR_EMBED_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "hear_embed"


def test_authors_source_downloads_once_then_loads_from_cache(tmp_path, payload, model, monkeypatch):
    monkeypatch.setenv("HEAR_EMBED_CACHE", str(tmp_path))
    with serve(payload) as server:
        bundle = _bundle(payload, server.url)
        monkeypatch.setitem(weights.AUTHORS_BUNDLES, "acoustic_model", bundle)
        loaded, info = load_acoustic_model()
        again, _ = load_acoustic_model("authors")
    assert len(server.requests) == 1 and not loaded.training
    assert info.source == "authors" and info.blob_id == bundle.blob_id and info.config == CONFIG
    assert info.meta == {"purpose": "test", "repo": bundle.repo, "commit": bundle.commit, "path": bundle.path,
                         "url": bundle.url, "license": "MIT"}
    for ours, theirs in zip(loaded.state_dict().values(), model.state_dict().values()):
        assert torch.equal(ours, theirs)
    log_mel = torch.randn(1, 128, 50, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.equal(loaded(log_mel)[0], again(log_mel)[0])


@pytest.mark.parametrize("bundle", [AUTHORS_ACOUSTIC_MODEL, AUTHORS_TOKENIZER], ids=lambda b: b.name)
def test_authors_bundles_point_at_the_pinned_commit(bundle):
    assert bundle.url == f"https://raw.githubusercontent.com/{bundle.repo}/{bundle.commit}/{bundle.path}"
    assert (bundle.repo, bundle.commit, bundle.license) == (
        "HarunoriKawano/HEAR", "8dd121641a158ebdb9a09d7fb56a91892df012f7", "MIT")
    assert replace(bundle, name="x").filename.startswith("x-" + bundle.blob_id[:10])
