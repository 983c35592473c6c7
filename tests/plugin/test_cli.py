"""The ``hear-embed`` command on real audio: FSDD speech (8 kHz WAV, tests/fixtures/audio) and a stereo
44.1 kHz FLAC made here; outputs, resuming, bad files, ``info``, ``export`` and the entry points."""
from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

import hear_embed
from hear_embed.api import get_timestamp_embeddings, load_model, pool_frames
from hear_embed.audio_io import find_audio_files, read_audio
from hear_embed.cli import main
from tests.builders.paths import FIXTURES

AUDIO = FIXTURES / "audio"
FSDD_FILES = ["0_george_2.wav", "3_jackson_0.wav", "5_nicolas_3.wav", "7_theo_1.wav"]


@pytest.fixture(scope="module")
def checkpoint(parity_dir) -> str:
    return str(parity_dir / "acoustic_model_small.pth")


def write_stereo_flac(path: Path, seconds: float = 1.5, rate: int = 44100) -> np.ndarray:
    """A 440 Hz tone, full scale on the left, half on the right; returns the expected 16 kHz mono mix."""
    time = np.arange(int(seconds * rate)) / rate
    tone = 0.5 * np.sin(2 * np.pi * 440 * time)
    soundfile.write(path, np.stack([tone, 0.5 * tone], axis=1), rate, subtype="PCM_24")
    return 0.75 * 0.5 * np.sin(2 * np.pi * 440 * np.arange(int(seconds * 16000)) / 16000)


@pytest.fixture()
def inputs(tmp_path) -> Path:
    """A folder with the FSDD wavs in a subfolder and a stereo FLAC at the top."""
    folder = tmp_path / "in"
    shutil.copytree(AUDIO, folder / "fsdd")
    write_stereo_flac(folder / "tone.flac")
    return folder


def test_read_audio_mixes_to_mono_and_resamples(tmp_path):
    expected = write_stereo_flac(tmp_path / "tone.flac")
    audio = read_audio(tmp_path / "tone.flac")
    assert audio.dtype == np.float32 and audio.shape == expected.shape
    np.testing.assert_allclose(audio[800:-800], expected[800:-800], atol=2e-3)


def test_find_audio_files_recurses_and_names_by_relative_path(inputs):
    found = find_audio_files([inputs])
    assert [str(name) for _, name in found] == [f"fsdd/{name}" for name in FSDD_FILES] + ["tone.flac"]
    assert not any(name.suffix == ".md" for _, name in found)


@pytest.mark.parametrize("options", [{}, {"layer": 1, "scene_pooling": "mean+std"}, {"quantize": "int8"}])
def test_embed_writes_npz_matching_the_api(inputs, tmp_path, checkpoint, capsys, options):
    out = tmp_path / "out"
    code = main(["embed", str(inputs), "--out", str(out), "--weights", checkpoint, "--scene",
                 "--model-options", json.dumps(options)])
    assert code == 0, capsys.readouterr().err
    written = sorted(str(path.relative_to(out)) for path in out.rglob("*.npz"))
    assert written == [f"fsdd/{name}.npz" for name in FSDD_FILES] + ["tone.flac.npz"]
    model = load_model(checkpoint, **options)
    for source in [inputs / "fsdd" / FSDD_FILES[0], inputs / "tone.flac"]:
        with np.load(out / source.relative_to(inputs).with_name(source.name + ".npz")) as data:
            embedding, timestamps, scene = data["embedding"], data["timestamps"], data["scene"]
        audio = torch.from_numpy(read_audio(source))[None]
        expected, expected_times = get_timestamp_embeddings(audio, model)
        assert embedding.dtype == np.float32 and embedding.shape == (expected.shape[1], 64)
        np.testing.assert_array_equal(timestamps, expected_times[0].numpy())
        np.testing.assert_allclose(embedding, expected[0].numpy(), atol=1e-6)
        assert scene.shape == (model.scene_embedding_size,)
        np.testing.assert_allclose(scene[:64], embedding.mean(axis=0), atol=1e-5)


@pytest.mark.parametrize("seconds", [4.0, 13.0])
def test_long_file_read_in_blocks_equals_the_whole_array(tmp_path, checkpoint, capsys, seconds):
    """The CLI hands the long-audio path the file's blocks, re-read once per pass (6 s and more: windowed): the
    embeddings are exactly those of the whole decoded array; a truncated file is warned about once, not per pass."""
    folder = tmp_path / "in"
    folder.mkdir()
    write_stereo_flac(folder / "tone.flac", seconds=seconds)
    time = np.arange(int(seconds * 22050)) / 22050
    soundfile.write(folder / "cut.wav", 0.3 * np.sin(2 * np.pi * 330 * time), 22050, subtype="PCM_16")
    data = (folder / "cut.wav").read_bytes()
    (folder / "cut.wav").write_bytes(data[: len(data) * 3 // 4])
    model = load_model(checkpoint)
    assert main(["embed", str(folder), "--out", str(tmp_path / "out"), "--weights", checkpoint, "--scene"]) == 0
    assert capsys.readouterr().err.count("is truncated") == 1
    for name in ["tone.flac", "cut.wav"]:
        with pytest.warns() if name == "cut.wav" else contextlib.nullcontext():
            audio = torch.from_numpy(read_audio(folder / name))[None]
        expected, expected_times = get_timestamp_embeddings(audio, model)
        with np.load(tmp_path / "out" / f"{name}.npz") as written:
            np.testing.assert_array_equal(written["embedding"], expected[0].numpy())
            np.testing.assert_array_equal(written["timestamps"], expected_times[0].numpy())
            np.testing.assert_array_equal(written["scene"], pool_frames(expected, "mean+std")[0].numpy())


def test_embed_resumes_and_skips_done_files(inputs, tmp_path, checkpoint, capsys):
    out = tmp_path / "out"
    arguments = ["embed", str(inputs), "--out", str(out), "--weights", checkpoint]
    assert main(arguments) == 0
    stamps = {path: path.stat().st_mtime_ns for path in out.rglob("*.npz")}
    (out / "tone.flac.npz").unlink()
    capsys.readouterr()
    assert main(arguments) == 0
    assert "5 audio file(s), 4 already done, 1 to embed" in capsys.readouterr().err
    for path, stamp in stamps.items():
        assert path.exists()
        if path.name != "tone.flac.npz":
            assert path.stat().st_mtime_ns == stamp
    assert not list(out.rglob("*.tmp"))


def test_bad_files_are_named_counted_and_fail_the_run(inputs, tmp_path, checkpoint, capsys):
    (inputs / "broken.wav").write_bytes(b"RIFF but not really a wave file")
    soundfile.write(inputs / "tiny.wav", np.zeros(100, dtype=np.float32), 16000)
    out = tmp_path / "out"
    code = main(["embed", str(inputs), "--out", str(out), "--weights", checkpoint])
    err = capsys.readouterr().err
    assert code == 1
    assert f"cannot read audio file {inputs / 'broken.wav'}" in err
    assert f"cannot embed {inputs / 'tiny.wav'}: audio is 100 samples long" in err
    assert "2 of 7 file(s) failed" in err
    assert len(list(out.rglob("*.npz"))) == 5


@pytest.mark.parametrize("arguments, message", [
    (["embed", "no/such/file.wav", "--out", "x"], "no such file or folder: no/such/file.wav"),
    (["embed", str(AUDIO), "--out", "x", "--model-options", "{layer: 1}"], "--model-options is not valid JSON"),
    (["embed", str(AUDIO), "--out", "x", "--model-options", "[1]"], "must be a JSON object"),
])
def test_bad_arguments_say_what_is_wrong(arguments, message, capsys):
    try:
        code = main(arguments)
    except SystemExit as exit:  # argparse rejects bad option values itself
        code = exit.code
    assert code == 2
    assert message in capsys.readouterr().err


def test_bad_model_option_is_reported(inputs, tmp_path, checkpoint, capsys):
    code = main(["embed", str(inputs), "--out", str(tmp_path / "out"), "--weights", checkpoint,
                 "--model-options", '{"layer": 9}'])
    assert code == 2
    assert "layer must be an integer from 1 to 2" in capsys.readouterr().err


def test_info_reports_weights_and_parameters(checkpoint, capsys):
    assert main(["info", "--weights", checkpoint]) == 0
    info = json.loads(capsys.readouterr().out)
    model = load_model(checkpoint)
    assert info["parameters"] == sum(p.numel() for p in model.acoustic_model.parameters())
    assert info["layout"] == "authors state_dict"
    assert info["blob_id"] == model.weights_info.blob_id and len(info["blob_id"]) == 40
    assert info["config"]["hidden_size"] == 64


def test_export_without_its_module_says_so(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "hear_embed.export", None)  # makes the import fail
    monkeypatch.delattr(hear_embed, "export", raising=False)
    assert main(["export", "--out", "x"]) == 2
    assert "the export subcommand is unavailable" in capsys.readouterr().err


@pytest.mark.parametrize("command", [[sys.executable, "-m", "hear_embed"],
                                     [str(Path(sys.executable).with_name("hear-embed"))]])
def test_entry_points_run(command, checkpoint):
    if not Path(command[0]).exists():
        pytest.skip("the hear-embed script is not installed next to this Python")
    done = subprocess.run(command + ["info", "--weights", checkpoint], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["source"] == checkpoint
