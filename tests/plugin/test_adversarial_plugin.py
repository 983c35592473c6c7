"""The adversarial suite, plugin half: tampered and hostile checkpoints, non-finite and odd inputs, stale or
damaged outputs of ``hear-embed embed``, hostile download servers and caches. Each test fails without its fix."""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import time
import tracemalloc
import types
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from hear_embed import api, weights
from hear_embed.api import get_scene_embeddings, get_timestamp_embeddings, load_model
from hear_embed.audio_io import AudioReadError, AudioWarning, find_audio_files, read_audio
from hear_embed.checkpoint import read_state_dict
from hear_embed.cli import main
from hear_embed.weights import (CheckpointError, ChecksumError, FetchError, WeightsBundle, fetch, load_acoustic_model,
                                save_checkpoint)
from tests.builders.http_server import serve
from tests.builders.paths import FIXTURES, REPO

AUDIO = FIXTURES / "audio"
WAV = AUDIO / "0_george_2.wav"


@pytest.fixture(scope="module")
def checkpoint(parity_dir) -> Path:
    return parity_dir / "acoustic_model_small.pth"


@pytest.fixture(scope="module")
def model(checkpoint):
    return load_model(str(checkpoint))


@pytest.fixture()
def inputs(tmp_path) -> Path:
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(WAV, folder / "a.wav")
    return folder


def _embed(inputs: Path, out: Path, weights: str | Path, *extra: str) -> int:
    return main(["embed", str(inputs), "--out", str(out), "--weights", str(weights), *extra])


def _saved(path: Path) -> dict[str, np.ndarray]:
    with np.load(path) as data:
        return {key: data[key] for key in data.files}


# --- 14.3: resume follows the weights' content and the options, damaged outputs are redone ---------------------

def test_resume_redoes_files_made_with_other_weights_or_options(inputs, tmp_path, checkpoint, capsys):
    out, weights = tmp_path / "out", tmp_path / "weights.pth"
    shutil.copy(checkpoint, weights)
    assert _embed(inputs, out, weights) == 0
    first = _saved(out / "a.wav.npz")["embedding"]

    assert _embed(inputs, out, weights, "--model-options", '{"layer": 1}') == 0
    assert "0 already done, 1 to embed" in capsys.readouterr().err
    layer1 = _saved(out / "a.wav.npz")["embedding"]
    expected, _ = get_timestamp_embeddings(torch.from_numpy(read_audio(WAV))[None], load_model(str(weights), layer=1))
    np.testing.assert_allclose(layer1, expected[0].numpy(), atol=1e-6)
    assert not np.allclose(layer1, first)

    state = torch.load(checkpoint, weights_only=True)  # other weights, same path, same size
    state["feature_extractor.conv.weight"] = state["feature_extractor.conv.weight"] * 1.5
    torch.save(state, weights)
    assert _embed(inputs, out, weights, "--model-options", '{"layer": 1}') == 0
    assert "0 already done, 1 to embed" in capsys.readouterr().err
    assert not np.allclose(_saved(out / "a.wav.npz")["embedding"], layer1)

    moved = tmp_path / "moved.pth"  # the same weights under another path: identity is content, not path
    shutil.copy(weights, moved)
    assert _embed(inputs, out, moved, "--model-options", '{"layer": 1}') == 0
    assert "1 already done, 0 to embed" in capsys.readouterr().err


@pytest.mark.parametrize("damage", ["garbage", "truncated", "flipped", "empty", "pickled"])
def test_damaged_output_is_redone_not_trusted(inputs, tmp_path, checkpoint, capsys, damage):
    out = tmp_path / "out"
    assert _embed(inputs, out, checkpoint) == 0
    target = out / "a.wav.npz"
    good, data = _saved(target), target.read_bytes()
    if damage == "garbage":
        target.write_bytes(b"not an npz file at all")
    elif damage == "truncated":
        target.write_bytes(data[: len(data) // 2])
    elif damage == "flipped":  # a byte inside the embedding's data: only the zip CRC tells
        with zipfile.ZipFile(target) as archive:
            member = archive.getinfo("embedding.npy")
        middle = member.header_offset + 30 + len(member.filename) + member.compress_size // 2
        target.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:])
    elif damage == "empty":
        target.write_bytes(b"")
    else:
        np.savez(target, embedding=np.array([object()], dtype=object), **{k: v for k, v in good.items()
                                                                            if k != "embedding"})
    capsys.readouterr()
    assert _embed(inputs, out, checkpoint) == 0
    assert "0 already done, 1 to embed" in capsys.readouterr().err
    for key, value in good.items():
        np.testing.assert_array_equal(_saved(target)[key], value)


# --- 14.5: finite in, finite out; checkpoints checked before they are trusted ---------------------------------

@pytest.mark.parametrize("amplitude", [1e18, 1e30, 3e38])
@pytest.mark.parametrize("seconds", [2, 8])  # the plain path and the windowed long-audio path
def test_loud_audio_gives_finite_embeddings(model, amplitude, seconds):
    quiet = torch.from_numpy(read_audio(WAV))[: 16000 * seconds]
    quiet = quiet.repeat(16000 * seconds // len(quiet) + 1)[: 16000 * seconds] / quiet.abs().max()
    loud = (quiet * amplitude)[None]
    embedding, _ = get_timestamp_embeddings(loud, model)
    assert bool(torch.isfinite(embedding).all())
    assert bool(torch.isfinite(get_scene_embeddings(loud, model)).all())
    scaled = loud * 2.0 ** -float(np.ceil(np.log2(float(loud.abs().max()))))  # what the frontend computes on
    np.testing.assert_allclose(embedding, get_timestamp_embeddings(scaled, model)[0], atol=1e-5)


def test_cli_never_writes_non_finite_embeddings(inputs, tmp_path, checkpoint, monkeypatch, capsys):
    def poisoned_model(*args, **kwargs):
        model = load_model(*args, **kwargs)
        with torch.no_grad():
            model.acoustic_model.feature_extractor.conv.weight[0, 0, 0] = float("nan")
        return model

    monkeypatch.setattr(api, "load_model", poisoned_model)
    assert _embed(inputs, tmp_path / "out", checkpoint) == 1
    assert f"cannot embed {inputs / 'a.wav'}: the model gave NaN or Inf embeddings" in capsys.readouterr().err
    assert not list((tmp_path / "out").rglob("*.npz"))


def _flip_in_member(path: Path, member_suffix: str) -> None:
    """Flip one byte in the middle of the largest zip member whose name ends with ``member_suffix``."""
    with zipfile.ZipFile(path) as archive:
        member = max((info for info in archive.infolist() if info.filename.endswith(member_suffix)),
                     key=lambda info: info.compress_size)
    data = bytearray(path.read_bytes())
    middle = member.header_offset + 30 + len(member.filename.encode()) + len(member.extra) + member.compress_size // 2
    data[middle] ^= 0x10
    path.write_bytes(bytes(data))


def test_checkpoint_with_flipped_bytes_is_refused(checkpoint, tmp_path):
    damaged = tmp_path / "damaged.pth"
    shutil.copy(checkpoint, damaged)
    _flip_in_member(damaged, "")  # the largest member: a weight tensor's bytes
    with pytest.raises(CheckpointError, match=f"{damaged}: damaged checkpoint file: member .* CRC-32"):
        load_acoustic_model(damaged)


def _state(checkpoint: Path) -> dict[str, torch.Tensor]:
    return {key: value.clone() for key, value in read_state_dict(checkpoint).items()}


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_weights_are_refused_naming_file_and_key(checkpoint, tmp_path, suffix, value):
    state = _state(checkpoint)
    key = "contextual_encoder.layers.1.ffn.output_dense.weight"
    state[key][3, 4] = value
    path = tmp_path / f"bad{suffix}"
    _write_state(state, path)
    with pytest.raises(CheckpointError, match=f"{path}: key '{key}' holds NaN or Inf"):
        load_acoustic_model(path)


def _write_state(state: dict, path: Path) -> None:
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file
        save_file({key: value.contiguous() for key, value in state.items()}, str(path))
    else:
        torch.save(state, path)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool])
def test_integer_tensor_where_a_float_is_expected_is_refused(checkpoint, tmp_path, suffix, dtype):
    state = _state(checkpoint)
    key = "feature_extractor.conv.weight"
    state[key] = state[key].to(dtype)
    path = tmp_path / f"ints{suffix}"
    _write_state(state, path)
    with pytest.raises(CheckpointError, match=f"{path}: key '{key}' has dtype {dtype} in the file"):
        load_acoustic_model(path)


@pytest.mark.parametrize("field, value, message", [
    ("format_version", "one", "field 'format_version' must be an integer, got 'one'"),
    ("format_version", None, "field 'format_version' must be an integer, got None"),
    ("config", "{not json", "field 'config' is not valid JSON"),
    ("config", "[1, 2]", "field 'config' must be a dict, got list"),
    ("meta", "{\"a\": ", "field 'meta' is not valid JSON"),
    ("meta", "\"text\"", "field 'meta' must be a dict, got str"),
    ("kind", "tokenizer_v9", "field 'kind' must be one of"),
])
def test_invalid_checkpoint_metadata_names_file_and_field(tmp_path, checkpoint, field, value, message):
    model, _ = load_acoustic_model(checkpoint)
    path = save_checkpoint(model, tmp_path / "model.safetensors")
    from safetensors import safe_open
    from safetensors.torch import save_file
    with safe_open(str(path), framework="pt") as file:
        tensors, metadata = {key: file.get_tensor(key) for key in file.keys()}, dict(file.metadata())
    metadata[field] = value
    if value is None:
        del metadata[field]
        metadata["format_version"] = "None"
        message = message.replace("None", "'None'")
    save_file(tensors, str(path), metadata=metadata)
    with pytest.raises(CheckpointError, match=f"{path}: checkpoint metadata {message}"):
        load_acoustic_model(path)


def test_invalid_metadata_in_a_torch_project_file_names_the_field(tmp_path, checkpoint):
    model, _ = load_acoustic_model(checkpoint)
    path = save_checkpoint(model, tmp_path / "model.pt")
    content = torch.load(path, weights_only=True)
    content["config"] = [1, 2, 3]
    torch.save(content, path)
    with pytest.raises(CheckpointError, match=f"{path}: checkpoint metadata field 'config' must be a dict"):
        load_acoustic_model(path)


# --- 14.8: messages instead of crashes ----------------------------------------------------------------------

@pytest.mark.parametrize("not_a_model", [None, "tiny", torch.nn.Linear(2, 2), object()])
@pytest.mark.parametrize("function", [get_timestamp_embeddings, get_scene_embeddings])
def test_api_refuses_what_is_not_a_model(function, not_a_model):
    with pytest.raises(TypeError, match="model must be what hear_embed.load_model"):
        function(torch.zeros(1, 16000), not_a_model)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device_is_one_line_exit_2(inputs, tmp_path, checkpoint, capsys):
    assert _embed(inputs, tmp_path / "out", checkpoint, "--device", "cuda") == 2
    err = capsys.readouterr().err
    assert err.startswith("hear-embed: device 'cuda' is not available") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


# --- 14.9: truncated files, odd folders, modes, empty input ------------------------------------------------

def _truncated_wav(path: Path) -> None:
    data = WAV.read_bytes()
    path.write_bytes(data[: len(data) * 2 // 3])


def test_truncated_wav_is_named_warned_by_the_cli_and_refused_in_strict_mode(inputs, tmp_path, checkpoint, capsys):
    _truncated_wav(inputs / "cut.wav")
    with pytest.warns(AudioWarning, match=f"{inputs / 'cut.wav'} is truncated: .* of the .* frames"):
        read_audio(inputs / "cut.wav")
    with pytest.raises(AudioReadError, match=f"{inputs / 'cut.wav'} is truncated"):
        read_audio(inputs / "cut.wav", strict=True)
    assert _embed(inputs, tmp_path / "out", checkpoint) == 0
    assert f"hear-embed: warning: audio file {inputs / 'cut.wav'} is truncated" in capsys.readouterr().err


def test_read_audio_refuses_another_rate_when_resampling_is_not_allowed(tmp_path):
    with pytest.raises(AudioReadError, match=f"{WAV} is at 8000 Hz, expected 16000 Hz"):
        read_audio(WAV, 16000, resample=False)
    assert read_audio(WAV, 8000, resample=False).shape == (soundfile.info(str(WAV)).frames,)


def test_non_finite_samples_are_named(tmp_path):
    audio = np.zeros(4000, dtype=np.float32)
    audio[1234] = np.inf
    soundfile.write(tmp_path / "inf.wav", audio, 16000, subtype="FLOAT")
    with pytest.raises(AudioReadError, match=f"{tmp_path / 'inf.wav'} holds NaN or Inf samples"):
        read_audio(tmp_path / "inf.wav")


@pytest.mark.parametrize("kind", ["dangling", "loop", "folder loop"])
def test_dangling_and_looping_symlinks_are_reported(inputs, kind):
    if kind == "dangling":
        (inputs / "gone.wav").symlink_to(inputs / "nowhere.wav")
        expected = f"skipped {inputs / 'gone.wav'}: a dangling symlink"
    elif kind == "loop":
        (inputs / "self.wav").symlink_to(inputs / "self.wav")
        expected = f"skipped {inputs / 'self.wav'}: a symlink loop"
    else:
        (inputs / "sub").mkdir()
        (inputs / "sub" / "up").symlink_to(inputs)
        expected = f"skipped {inputs / 'sub' / 'up'}: a symlink loop or second link to"
    with pytest.warns(AudioWarning, match=expected):
        found = find_audio_files([inputs])
    assert [str(name) for _, name in found] == ["a.wav"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any folder")
def test_unreadable_folder_is_reported(inputs):
    locked = inputs / "locked"
    locked.mkdir()
    locked.chmod(0)
    try:
        with pytest.warns(AudioWarning, match=f"cannot read folder {locked}"):
            find_audio_files([inputs])
    finally:
        locked.chmod(stat.S_IRWXU)


def test_empty_folder_is_named_and_fails(tmp_path, checkpoint, capsys):
    (tmp_path / "empty").mkdir()
    assert _embed(tmp_path / "empty", tmp_path / "out", checkpoint) == 1
    err = capsys.readouterr().err
    assert f"warning: no audio files in folder {tmp_path / 'empty'}" in err and "nothing to embed" in err


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_outputs_follow_the_umask(inputs, tmp_path, checkpoint, umask):
    previous = os.umask(umask)
    try:
        assert _embed(inputs, tmp_path / "out", checkpoint) == 0
    finally:
        os.umask(previous)
    assert stat.S_IMODE((tmp_path / "out" / "a.wav.npz").stat().st_mode) == 0o666 & ~umask


# --- 10.6: info tells the license and no machine paths -------------------------------------------------------

def test_info_on_tiny_shows_its_license_and_no_absolute_paths(capsys):
    assert main(["info", "--weights", "tiny"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["license"].startswith("MIT") and "CC BY-SA 4.0" in info["license"]
    assert info["path"] == "hear_embed/checkpoints/tiny.pt"

    def strings(value):
        if isinstance(value, dict):
            return [s for item in value.values() for s in strings(item)]
        if isinstance(value, list):
            return [s for item in value for s in strings(item)]
        return [value] if isinstance(value, str) else []

    assert not [text for text in strings(info) if text.startswith("/")]



# --- 14.7: downloads and the cache, against hostile loopback servers -----------------------------------------

@pytest.fixture(scope="module")
def payload(checkpoint) -> bytes:
    return checkpoint.read_bytes()  # about 0.5 MB


def _dead_url() -> str:
    with socket.socket() as sock:  # a port that was free a moment ago: nothing listens there
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/models/weights.pth"


def _bundle(payload: bytes, url: str, max_size: int = 1 << 28) -> WeightsBundle:
    blob_id = hashlib.sha1(b"blob %d\0" % len(payload) + payload).hexdigest()
    return WeightsBundle(name="test_weights", repo="example/weights", commit="0" * 40, path="models/weights.pth",
                         url=url, blob_id=blob_id, license="MIT", description="test weights", max_size=max_size)


FETCH_CHILD = """
import json, os, sys
from hear_embed.weights import WeightsBundle, fetch
try:
    print(json.dumps({"path": str(fetch(WeightsBundle(**json.loads(os.environ["BUNDLE"])), cache=sys.argv[1]))}))
except Exception as error:
    print(json.dumps({"error": f"{type(error).__name__}: {error}"}))
"""


def _fetch_child(bundle: WeightsBundle, cache: Path, prefix: list[str] = ()) -> subprocess.Popen:
    """``fetch`` in a child process (command ``prefix`` first); its stdout is one JSON line, path or error."""
    env = {**os.environ, "BUNDLE": json.dumps(dataclasses.asdict(bundle)),
           "PYTHONPATH": str(REPO), "HOME": str(cache.parent)}
    return subprocess.Popen([*prefix, sys.executable, "-c", FETCH_CHILD, str(cache)], stdout=subprocess.PIPE,
                            text=True, env=env, cwd=cache.parent)


def _result(child: subprocess.Popen) -> dict:
    out, _ = child.communicate(timeout=120)
    return json.loads(out.strip().splitlines()[-1])


def test_concurrent_fetches_into_one_cache_download_once(tmp_path, payload):
    with serve(payload, drip_bytes=32 << 10, drip_s=0.05) as server:  # about 1 s: the children overlap
        bundle = _bundle(payload, server.url)
        children = [_fetch_child(bundle, tmp_path / "cache") for _ in range(2)]
        results = [_result(child) for child in children]
    assert results == [{"path": str(tmp_path / "cache" / bundle.filename)}] * 2
    assert len(server.requests) == 1 and (tmp_path / "cache" / bundle.filename).read_bytes() == payload


@contextlib.contextmanager
def _read_only_folder(folder: Path):
    """``folder`` with mode 0o555; yields the command prefix that makes a child respect it (root ignores modes
    unless it runs without CAP_DAC_OVERRIDE: ``setpriv``)."""
    folder.mkdir(parents=True, exist_ok=True)
    prefix = []
    if os.geteuid() == 0:
        if not shutil.which("setpriv"):
            pytest.skip("running as root without setpriv: cannot make a folder read-only")
        prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]
    folder.chmod(0o555)
    try:
        yield prefix
    finally:
        folder.chmod(0o755)


def test_read_only_cache_holding_the_right_file_works(tmp_path, payload):
    cache = tmp_path / "cache"
    bundle = _bundle(payload, _dead_url())
    cache.mkdir()
    (cache / bundle.filename).write_bytes(payload)  # placed by hand, never verified here
    with _read_only_folder(cache) as prefix:
        assert _result(_fetch_child(bundle, cache, prefix)) == {"path": str(cache / bundle.filename)}
    assert sorted(path.name for path in cache.iterdir()) == [bundle.filename]


def test_unwritable_cache_says_so(tmp_path, payload):
    cache = tmp_path / "cache"
    with serve(payload) as server:
        bundle = _bundle(payload, server.url)
        with _read_only_folder(cache) as prefix:
            error = _result(_fetch_child(bundle, cache, prefix))["error"]
    assert error.startswith("FetchError") and f"the cache folder {cache} cannot be written" in error
    assert "interrupted" not in error and not server.requests


@pytest.mark.parametrize("endless", [True, False])
def test_server_sending_more_than_expected_is_cut_off(tmp_path, payload, endless):
    with serve(payload, endless=endless) as server:
        bundle = _bundle(payload, server.url, max_size=len(payload) // 3)
        start = time.monotonic()
        with pytest.raises(FetchError, match=f"more than the {len(payload) // 3} (bytes )?expected at most"):
            fetch(bundle, cache=tmp_path)
    assert time.monotonic() - start < 10
    assert not list(tmp_path.iterdir())  # nothing kept


def test_dripping_server_hits_the_deadline(tmp_path, payload, monkeypatch):
    monkeypatch.setattr(weights, "DEADLINE_S", 1.0)
    with serve(payload, drip_bytes=64, drip_s=0.01) as server:  # would take about 80 s
        bundle = _bundle(payload, server.url)
        start = time.monotonic()
        with pytest.raises(FetchError, match=r"too slow: \d+ bytes arrived within the 1 s allowed"):
            fetch(bundle, cache=tmp_path)
    assert time.monotonic() - start < 5


def test_stalled_server_times_out_per_read(tmp_path, payload, monkeypatch):
    monkeypatch.setattr(weights, "TIMEOUT_S", 0.3)
    with serve(payload, stall_s=3.0) as server:
        bundle = _bundle(payload, server.url)
        start = time.monotonic()
        with pytest.raises(FetchError, match="interrupted 3 times, last: .*timed out"):
            fetch(bundle, cache=tmp_path)
    assert time.monotonic() - start < 5


def test_verified_marker_does_not_trust_size_and_mtime(tmp_path, payload):
    with serve(payload) as server:
        bundle = _bundle(payload, server.url)
        path = fetch(bundle, cache=tmp_path)
    before = path.stat()
    forged = bytearray(payload)
    forged[len(forged) // 2] ^= 0xFF
    path.write_bytes(bytes(forged))  # same size, then the old mtime put back
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    with pytest.raises(ChecksumError, match=f"{path}: git blob id"):
        fetch(bundle, cache=tmp_path)


# --- 14.10: the authors' file as a pickled whole module, read without its code -------------------------------

REFERENCE_CLASSES = {  # the reference's classes (HarunoriKawano/HEAR, src/models) a pickled module names
    "src.models.acoustic_model": ["AcousticModel"],
    "src.models.feature_extractor": ["FeatureExtractor"],
    "src.models.contextual_encoder": ["ContextualEncoder"],
    "src.models.transformer": ["TransformerWithRelativePosition", "MultiHeadSelfAttentionWithRelativePosition",
                               "FeedForward"],
    "src.models.positional_encoder": ["RelativePositionEncoder"],
    "src.config": ["AcousticModelConfig"],
}


class _Exploit:
    """Unpickling this runs a shell command: the restricted unpickler must refuse it."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@contextlib.contextmanager
def _reference_classes():
    """Stand-ins named like the reference's classes, importable only inside the block (to pickle them)."""
    classes, created = {}, []
    for module_name, names in REFERENCE_CLASSES.items():
        parts = module_name.split(".")
        for depth in range(1, len(parts) + 1):
            name = ".".join(parts[:depth])
            if name not in sys.modules:
                sys.modules[name] = types.ModuleType(name)
                created.append(name)
        for name in names:
            base = object if name.endswith("Config") else torch.nn.Module
            cls = type(name, (base,), {"__module__": module_name, "__qualname__": name})
            setattr(sys.modules[module_name], name, cls)
            classes[name] = cls
    try:
        yield classes
    finally:
        for name in created:
            del sys.modules[name]


def _reference_module(classes: dict, state: dict, exploit: object = None) -> torch.nn.Module:
    """The reference's AcousticModel object tree (as src/models builds it) holding ``state``."""
    def module(name: str, **children) -> torch.nn.Module:
        instance = classes[name]()
        torch.nn.Module.__init__(instance)
        for child_name, child in children.items():
            setattr(instance, child_name, child)
        return instance

    hidden, heads = state["feature_extractor.conv.weight"].shape[0], state[
        "contextual_encoder.layers.0.self_attn.query_bias1"].shape[0]
    layers = sorted({int(key.split(".")[2]) for key in state if key.startswith("contextual_encoder.layers.")})
    intermediate = state["contextual_encoder.layers.0.ffn.intermediate_dense.weight"].shape[0]
    table = state["contextual_encoder.layers.0.self_attn.relative_position_k.positional_embedding.weight"].shape

    def position() -> torch.nn.Module:
        return module("RelativePositionEncoder", positional_embedding=torch.nn.Embedding(*table))

    def attention() -> torch.nn.Module:
        attn = module("MultiHeadSelfAttentionWithRelativePosition",
                      **{f"linear_{n}": torch.nn.Linear(hidden, hidden) for n in "qkvo"},
                      dropout=torch.nn.Dropout(0.1), relative_position_k=position(), relative_position_v=position())
        attn.linear_out = attn.linear_o
        del attn.linear_o
        attn.query_bias1 = torch.nn.Parameter(torch.zeros(heads, hidden // heads))
        attn.query_bias2 = torch.nn.Parameter(torch.zeros(heads, hidden // heads))
        attn.head_size, attn.num_heads = hidden // heads, heads
        return attn

    def layer() -> torch.nn.Module:
        ffn = module("FeedForward", layer_norm=torch.nn.LayerNorm(hidden),
                     intermediate_dense=torch.nn.Linear(hidden, intermediate), intermediate_act_fn=torch.nn.SiLU(),
                     intermediate_dropout=torch.nn.Dropout(0.1), output_dense=torch.nn.Linear(intermediate, hidden),
                     output_dropout=torch.nn.Dropout(0.1))
        return module("TransformerWithRelativePosition", layer_norm1=torch.nn.LayerNorm(hidden),
                      self_attn=attention(), layer_norm2=torch.nn.LayerNorm(hidden), ffn=ffn)

    extractor = module("FeatureExtractor", conv=torch.nn.Conv1d(128, hidden, 2, 2), relu=torch.nn.ReLU())
    encoder = module("ContextualEncoder", layers=torch.nn.ModuleList([layer() for _ in layers]))
    model = module("AcousticModel", feature_extractor=extractor, contextual_encoder=encoder)
    model.load_state_dict(state, strict=True)
    config = classes["AcousticModelConfig"]()
    config.hidden_size, config.max_length = hidden, table[0] // 2
    model.config, model.max_length, model.window = config, table[0] // 2, torch.ones(table[0] // 2)
    model.register_buffer("scratch", torch.zeros(3), persistent=False)  # not part of the state_dict
    if exploit is not None:
        model.contextual_encoder.layers[0].ffn.hook = exploit
    return model


@pytest.mark.parametrize("wrapped", [False, True])
def test_pickled_whole_module_is_read_from_stand_ins(checkpoint, tmp_path, wrapped):
    state = _state(checkpoint)
    path = tmp_path / "acoustic_model_weight.pth"
    with _reference_classes() as classes:
        module = _reference_module(classes, state)
        torch.save({"model": module} if wrapped else module, path)
    assert "src.models.acoustic_model" not in sys.modules  # nothing to import the reference's code from
    with pytest.raises(Exception, match="Unsupported global|weights_only"):
        torch.load(path, weights_only=True)
    model, info = load_acoustic_model(path)
    assert info.layout.startswith("pickled module read without its code")
    expected, _ = load_acoustic_model(checkpoint)
    for (key, ours), (expected_key, theirs) in zip(model.state_dict().items(), expected.state_dict().items()):
        assert key == expected_key and torch.equal(ours, theirs)


@pytest.mark.parametrize("where", ["inside the module", "the whole file"])
def test_malicious_pickled_module_is_still_refused(checkpoint, tmp_path, where):
    marker, path = tmp_path / "executed", tmp_path / "acoustic_model_weight.pth"
    with _reference_classes() as classes:
        if where == "inside the module":
            torch.save(_reference_module(classes, _state(checkpoint), exploit=_Exploit(marker)), path)
        else:
            torch.save(_Exploit(marker), path)
    with pytest.raises(CheckpointError, match=f"{path}: .*refused global '(posix|os).system'"):
        load_acoustic_model(path)
    assert not marker.exists()


# --- issue 9 item 6: the harness reads audio through the same reader, strictly ----------------------------------

@pytest.mark.parametrize("problem", ["truncated", "stereo", "other rate", "non-finite"])
def test_strict_reader_refuses_what_the_cli_accepts_or_warns_about(tmp_path, problem):
    path = tmp_path / "clip.wav"
    if problem == "truncated":
        _truncated_wav(path)
        rate = soundfile.info(str(WAV)).samplerate
    else:
        rate = 8000 if problem == "other rate" else 16000
        audio = np.full((4000, 2 if problem == "stereo" else 1), 0.1, dtype=np.float32)
        audio[100] = np.nan if problem == "non-finite" else audio[100]
        soundfile.write(path, audio, rate, subtype="FLOAT")
    expected = {"truncated": "is truncated", "stereo": "has 2 channels, expected mono",
                "other rate": "is at 8000 Hz, expected 16000 Hz", "non-finite": "holds NaN or Inf"}[problem]
    with pytest.raises(AudioReadError, match=f"{path} {expected}"):
        read_audio(path, 16000 if problem == "other rate" else rate, strict=True, resample=False)


# --- 14.11: the CLI's reader does not hold the file at its own rate --------------------------------------------

def _read_peak_overhead(path: Path) -> int:
    """Peak bytes numpy allocated while reading ``path`` (tracemalloc sees numpy's buffers), minus the result's."""
    tracemalloc.start()
    try:
        audio = read_audio(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    return peak - audio.nbytes


def test_reading_memory_does_not_grow_with_the_file(tmp_path):
    overheads = {}
    for seconds in (15, 60):
        path = tmp_path / f"{seconds}s.flac"
        time_s = np.arange(seconds * 44100) / 44100
        tone = 0.3 * np.sin(2 * np.pi * 220 * time_s)
        soundfile.write(path, np.stack([tone, 0.5 * tone], axis=1).astype(np.float32), 44100, subtype="PCM_16")
        overheads[seconds] = _read_peak_overhead(path)
    whole_file = 60 * 44100 * 2 * 4  # the 60 s file decoded at once as float32 stereo: 21 MB
    assert overheads[60] < whole_file / 8
    assert overheads[60] < overheads[15] + (1 << 20)  # no growth beyond noise from 15 s to 60 s
