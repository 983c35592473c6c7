"""Adversarial probes of the harness (issue 14, harness half): content-changed audio and weights, traversal
names, hostile symlinks, bad, truncated and non-finite audio. The probes of defects fail on main d4165bb; the
others specify the file-hash sidecar and guard the fixes against false alarms (complete wavs, linked task folders)."""
from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

import eval.__main__ as cli
import eval.file_hashes as file_hashes
from eval.embed import Embedder, embed_task, task_identity
from eval.file_hashes import FileHashes
from eval.tasks import TaskError, load_task, validate_task
from hear_embed.audio_io import AudioReadError
from tests.builders.tasks import RATE, add_noise_audio, make_task


@pytest.fixture(autouse=True)
def immediate_sidecars(private_hash_cache, monkeypatch):
    """Sidecars (in the test's folder) remember digests at once, no racy-ctime wait, so their path is exercised."""
    monkeypatch.setattr(file_hashes, "RACY_SECONDS", 0.0)


def rewrite_keeping_size_and_mtime(path: Path, write) -> None:
    """Rewrite ``path`` through ``write(path)`` to the same size, then forge its mtime back."""
    before = path.stat()
    time.sleep(0.02)  # past the file system's timestamp tick, so ctime moves
    write(path)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    after = path.stat()
    assert (after.st_size, after.st_mtime_ns) == (before.st_size, before.st_mtime_ns)


def rewrite_every_wav(folder: Path, seed: int = 1) -> None:
    """Different random audio of the same length in every clip, mtimes restored."""
    rng = np.random.default_rng(seed)
    for path in sorted(folder.glob("16000/*/*.wav")):
        frames = sf.info(str(path)).frames
        rewrite_keeping_size_and_mtime(path, lambda p: sf.write(
            str(p), rng.uniform(-0.5, 0.5, frames).astype(np.float32), RATE))


def flip_one_sample(folder: Path, seed: int = 1) -> None:
    """One sample of one clip changed, mtime restored."""
    path = sorted(folder.glob("16000/*/*.wav"))[0]
    audio, _ = sf.read(str(path), dtype="float32")
    audio[len(audio) // 2] = 0.25 if audio[len(audio) // 2] != 0.25 else -0.25
    rewrite_keeping_size_and_mtime(path, lambda p: sf.write(str(p), audio, RATE))


# --- 14.2: a changed byte is never served from the cache --------------------------------------------------------

@pytest.mark.parametrize("change", [rewrite_every_wav, flip_one_sample])
def test_audio_rewritten_in_place_is_embedded_again(tmp_path, fake_module, change):
    folder = make_task(tmp_path / "tasks", files_per_split=3)
    add_noise_audio(folder)
    task = validate_task(folder, RATE)
    before = embed_task(task, Embedder(fake_module), tmp_path / "cache", progress=False)
    change(folder)
    after = embed_task(task, Embedder(fake_module), tmp_path / "cache", progress=False)
    fresh = embed_task(task, Embedder(fake_module), tmp_path / "fresh_cache", progress=False)
    for split in task.splits:
        np.testing.assert_array_equal(after[split].x, fresh[split].x)
    assert any(not np.array_equal(before[split].x, after[split].x) for split in task.splits)


def test_task_identity_follows_content_not_name_size_or_mtime(tmp_path):
    folder = make_task(tmp_path / "tasks")
    add_noise_audio(folder)
    original = task_identity(load_task(folder))
    assert task_identity(load_task(folder)) == original  # stable (second time from the sidecar)
    flip_one_sample(folder)
    assert task_identity(load_task(folder)) != original


def test_weights_replaced_in_place_with_same_size_and_mtime_are_used(tmp_path, fake_module):
    folder = make_task(tmp_path / "tasks")
    task = validate_task(folder, RATE)
    module = __import__(fake_module)
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"weights v1")
    first_key = Embedder(fake_module, weights=str(weights)).weights_key
    embed_task(task, Embedder(fake_module, weights=str(weights)), tmp_path / "cache", progress=False)
    calls = len(module.CALLS)
    rewrite_keeping_size_and_mtime(weights, lambda p: p.write_bytes(b"weights v2"))
    assert Embedder(fake_module, weights=str(weights)).weights_key != first_key  # the result key follows too
    embed_task(task, Embedder(fake_module, weights=str(weights)), tmp_path / "cache", progress=False)
    assert len(module.CALLS) == 2 * calls


def _fake_probe(task, features, **kwargs):
    """A probe whose 'score' is the mean of the test embeddings: it changes whenever the embeddings do."""
    score = float(np.mean(features["test"].x))
    return SimpleNamespace(primary_metric=task.primary_metric, fold_scores={"test": {task.primary_metric: score}},
                           mean=score, std=0.0, best_params={}, validation_score=None, protocol="fake", details={})


def _fake_seeds(task, features, seeds, **kwargs):
    """eval.probe.evaluate_seeds with :func:`_fake_probe` for every seed (what eval.run calls)."""
    return {seed: _fake_probe(task, features) for seed in seeds}


def _finished_mean(out: Path) -> float:
    """The mean score of the one finished task result in run folder ``out``."""
    (result,) = (out / "tasks" / "task").glob("*.json")
    return json.loads(result.read_text())["result"]["mean"]


def test_finished_task_results_are_not_reused_after_the_audio_changed(tmp_path, fake_module, monkeypatch):
    """The reported symptom: a rerun of ``python -m eval run`` over rewritten audio printed the old scores."""
    monkeypatch.setattr("eval.probe.evaluate_seeds", _fake_seeds)
    folder = make_task(tmp_path / "tasks", files_per_split=3)
    add_noise_audio(folder)
    args = ["run", "--model", fake_module, "--tasks-dir", str(tmp_path / "tasks"), "--out", str(tmp_path / "out"),
            "--no-progress"]
    assert cli.main(args) == 0
    first = _finished_mean(tmp_path / "out")
    rewrite_every_wav(folder)
    assert cli.main(args) == 0
    second = _finished_mean(tmp_path / "out")
    assert second != first
    assert cli.main(["run", "--model", fake_module, "--tasks-dir", str(tmp_path / "tasks"), "--out",
                     str(tmp_path / "fresh"), "--no-progress"]) == 0
    assert _finished_mean(tmp_path / "fresh") == second


def test_sidecar_serves_unchanged_files_without_reading_them(tmp_path, monkeypatch):
    audio = tmp_path / "clip.bin"
    audio.write_bytes(b"a" * 1000)
    with FileHashes(tmp_path, sidecar_folder=tmp_path / "sidecars") as hashes:
        digest = hashes.digest(audio)
    assert digest == file_hashes.blake2b_of_file(audio)

    def no_reading(path):
        raise AssertionError(f"{path} was read again")

    monkeypatch.setattr(file_hashes, "blake2b_of_file", no_reading)
    assert FileHashes(tmp_path, sidecar_folder=tmp_path / "sidecars").digest(audio) == digest


@pytest.mark.parametrize("sidecar_text", ["not json", "[]", '{"format": 2, "folder": "elsewhere", "files": {}}',
                                          '{"format": 99, "files": {}}'])
def test_a_damaged_or_foreign_sidecar_only_costs_a_reread(tmp_path, sidecar_text):
    audio = tmp_path / "clip.bin"
    audio.write_bytes(b"b" * 100)
    hashes = FileHashes(tmp_path, sidecar_folder=tmp_path / "sidecars")
    hashes.sidecar.parent.mkdir(parents=True)
    hashes.sidecar.write_text(sidecar_text)
    assert FileHashes(tmp_path, sidecar_folder=tmp_path / "sidecars").digest(audio) == \
        file_hashes.blake2b_of_file(audio)


def test_forged_sidecar_entry_is_ignored_once_the_file_changes(tmp_path):
    """The sidecar is trusted only while (inode, size, mtime_ns, ctime_ns) all match."""
    audio = tmp_path / "clip.bin"
    audio.write_bytes(b"c" * 100)
    with FileHashes(tmp_path, sidecar_folder=tmp_path / "sidecars") as hashes:
        old = hashes.digest(audio)
    rewrite_keeping_size_and_mtime(audio, lambda p: p.write_bytes(b"d" * 100))
    assert FileHashes(tmp_path, sidecar_folder=tmp_path / "sidecars").digest(audio) != old


def test_files_changed_within_the_racy_window_are_not_remembered(tmp_path, monkeypatch):
    monkeypatch.setattr(file_hashes, "RACY_SECONDS", 3600.0)
    audio = tmp_path / "clip.bin"
    audio.write_bytes(b"e" * 100)
    with FileHashes(tmp_path, sidecar_folder=tmp_path / "sidecars") as hashes:
        hashes.digest(audio)
    assert not hashes.sidecar.exists() and hashes.entries == {}


# --- 14.4: nothing outside the task folder is read, nothing outside --out is written ----------------------------

BAD_NAMES = ["../../escaped", "/tmp/absolute", "a/b", "..", ".", "", "back\\slash"]


@pytest.mark.parametrize("task_name", BAD_NAMES)
def test_task_names_must_be_one_path_component(tmp_path, task_name):
    folder = make_task(tmp_path / "tasks")
    metadata = json.loads((folder / "task_metadata.json").read_text())
    (folder / "task_metadata.json").write_text(json.dumps({**metadata, "task_name": task_name}))
    for read in (load_task, lambda f: validate_task(f, RATE)):
        with pytest.raises(TaskError, match=r"task_name .* must be a (single|non-empty) file name"):
            read(folder)


def test_traversal_task_name_writes_nothing_outside_out(tmp_path, fake_module, monkeypatch):
    monkeypatch.setattr("eval.probe.evaluate_seeds", _fake_seeds)
    folder = make_task(tmp_path / "tasks")
    metadata = json.loads((folder / "task_metadata.json").read_text())
    (folder / "task_metadata.json").write_text(json.dumps({**metadata, "task_name": "../../escaped"}))
    out = tmp_path / "runs" / "out"
    assert cli.main(["run", "--model", fake_module, "--tasks-dir", str(tmp_path / "tasks"), "--out", str(out),
                     "--no-progress"]) == 2
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "runs" / "escaped").exists()


@pytest.mark.parametrize("split_name", ["../valid", "/tmp/x", "a/b", ".."])
def test_split_names_must_be_one_path_component(tmp_path, split_name):
    folder = make_task(tmp_path / "tasks", split_mode="new_split_kfold")
    metadata = json.loads((folder / "task_metadata.json").read_text())
    (folder / "task_metadata.json").write_text(json.dumps({**metadata, "splits": [*metadata["splits"], split_name]}))
    with pytest.raises(TaskError, match="split name"):
        load_task(folder)


def test_split_file_entries_escaping_the_folder_are_all_named_and_never_read(tmp_path, monkeypatch):
    outside = tmp_path / "other"
    outside.mkdir()
    sf.write(str(outside / "x.wav"), np.zeros(1600, dtype=np.float32), RATE)
    folder = make_task(tmp_path / "tasks")
    train = folder / "16000" / "train"
    (train / "link_out.wav").symlink_to(outside / "x.wav")
    (train / "loop.wav").symlink_to(train / "loop.wav")
    entries = {"../../../../other/x.wav": ["a"], str(outside / "x.wav"): ["a"], "sub/x.wav": ["a"], "..": ["a"],
               "link_out.wav": ["a"], "loop.wav": ["a"], "train_0.wav": ["a"]}
    (folder / "train.json").write_text(json.dumps(entries))
    read = []
    real_digest = file_hashes.blake2b_of_file
    monkeypatch.setattr(file_hashes, "blake2b_of_file", lambda path: read.append(Path(path)) or real_digest(path))
    task_identity(load_task(folder))
    assert read and all(folder.resolve() in path.resolve().parents for path in read)
    with pytest.raises(TaskError) as caught:
        validate_task(folder, RATE)
    problems = caught.value.problems
    assert len(problems) == 6, problems
    for entry in ("../../../../other/x.wav", str(outside / "x.wav"), "sub/x.wav", ".."):
        assert f"train.json entry {entry!r}: must be a single file name (no path separators, not '.' or '..')" \
            in problems, (entry, problems)
    assert any("train/link_out.wav: resolves to" in p and "outside the task folder" in p for p in problems)
    assert any("train/loop.wav: cannot be resolved" in p for p in problems)


def test_a_task_folder_reached_through_a_symlink_is_accepted(tmp_path):
    folder = make_task(tmp_path / "data")
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "task").symlink_to(folder)
    assert validate_task(tmp_path / "tasks" / "task", RATE).name == "task"


# --- 14.8 / 14.9: bad audio is named in validation, or at the latest when it is embedded ------------------------

def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 200])


@pytest.mark.parametrize("subtype", ["PCM_16", "FLOAT"])
def test_truncated_wav_is_named_with_declared_and_present_frames(tmp_path, subtype):
    folder = make_task(tmp_path / "tasks")
    path = folder / "16000" / "valid" / "valid_1.wav"
    sf.write(str(path), np.full(1600, 0.1, dtype=np.float32), RATE, subtype=subtype)
    truncate(path)
    present = 1600 - 200 // (2 if subtype == "PCM_16" else 4)
    with pytest.raises(TaskError) as caught:
        validate_task(folder, RATE)
    assert caught.value.problems == [f"16000/valid/valid_1.wav: truncated wav: the header declares 1600 frames, "
                                     f"the file holds {present}"]


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "FLOAT", "DOUBLE"])
def test_complete_wavs_of_every_subtype_pass(tmp_path, subtype):
    folder = make_task(tmp_path / "tasks")
    for length, path in zip((1, 1599, 1600), sorted(folder.glob("16000/*/*.wav"))):
        sf.write(str(path), np.full(length, 0.1), RATE, subtype=subtype)  # odd and even data chunk sizes
    validate_task(folder, RATE)


def test_every_bad_file_is_listed_at_once(tmp_path):
    folder = make_task(tmp_path / "tasks", files_per_split=6)
    train = folder / "16000" / "train"
    (train / "train_0.wav").write_bytes(b"")
    sf.write(str(train / "train_1.wav"), np.zeros(0, dtype=np.float32), RATE)
    sf.write(str(train / "train_2.wav"), np.zeros(1600, dtype=np.float32), 8000)
    sf.write(str(train / "train_3.wav"), np.zeros((1600, 2), dtype=np.float32), RATE)
    truncate(train / "train_4.wav")
    (train / "train_5.wav").write_bytes(b"RIFF garbage")
    with pytest.raises(TaskError) as caught:
        validate_task(folder, RATE)
    assert caught.value.problems == [
        "16000/train/train_0.wav: empty file (0 bytes)",
        "16000/train/train_1.wav: empty audio (0 samples)",
        "16000/train/train_2.wav: sample rate 8000 Hz, expected 16000 Hz",
        "16000/train/train_3.wav: 2 channels, expected mono",
        "16000/train/train_4.wav: truncated wav: the header declares 1600 frames, the file holds 1500",
        caught.value.problems[5],
    ]
    assert caught.value.problems[5].startswith("16000/train/train_5.wav: unreadable audio")


@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_non_finite_audio_is_named_when_embedded(tmp_path, fake_module, bad_value):
    folder = make_task(tmp_path / "tasks")
    bad = folder / "16000" / "test" / "test_1.wav"
    audio = np.zeros(1600, dtype=np.float32)
    audio[7] = bad_value
    sf.write(str(bad), audio, RATE, subtype="FLOAT")
    task = validate_task(folder, RATE)  # a header check cannot see samples
    with pytest.raises(AudioReadError, match="NaN or Inf samples") as caught:
        embed_task(task, Embedder(fake_module), tmp_path / "cache", progress=False)
    assert str(bad) in str(caught.value) and "test_0.wav" not in str(caught.value)


def test_non_finite_embeddings_name_the_file(tmp_path, fake_module):
    folder = make_task(tmp_path / "tasks")
    loud = folder / "16000" / "valid" / "valid_0.wav"
    sf.write(str(loud), np.full(1600, 3e37, dtype=np.float32), RATE, subtype="FLOAT")  # finite, overflows the model
    task = validate_task(folder, RATE)
    with pytest.raises(ValueError, match="returned NaN or Inf embeddings for audio file") as caught:
        embed_task(task, Embedder(fake_module), tmp_path / "cache", progress=False)
    assert str(loud) in str(caught.value) and "valid_1.wav" not in str(caught.value)


def test_module_errors_name_the_batch_files(tmp_path, fake_module):
    folder = make_task(tmp_path / "tasks")
    task = validate_task(folder, RATE)
    module = sys.modules.get(fake_module) or __import__(fake_module)

    def refuse(audio, model):
        raise ValueError("audio too short in clip(s) [1]")

    module.get_scene_embeddings = refuse
    with pytest.raises(ValueError, match=r"too short in clip\(s\) \[1\] \(the batch's clips, in order: .*\.wav"):
        embed_task(task, Embedder(fake_module), tmp_path / "cache", progress=False)


def test_a_file_changed_to_another_rate_after_validation_is_named(tmp_path, fake_module):
    folder = make_task(tmp_path / "tasks")
    task = validate_task(folder, RATE)
    sf.write(str(folder / "16000" / "train" / "train_1.wav"), np.zeros(800, dtype=np.float32), 8000)
    with pytest.raises(AudioReadError, match=r"train_1\.wav is at 8000 Hz, expected 16000 Hz"):
        embed_task(task, Embedder(fake_module), tmp_path / "cache", progress=False)


def test_a_task_built_by_hand_with_a_traversal_name_writes_nothing(tmp_path, fake_module):
    folder = make_task(tmp_path / "tasks")
    task = dataclasses.replace(validate_task(folder, RATE), name="../../escaped")
    with pytest.raises(ValueError, match="task name '../../escaped' must be a single file name"):
        embed_task(task, Embedder(fake_module), tmp_path / "runs" / "cache", progress=False)
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "runs" / "escaped").exists()


def test_a_missing_split_file_is_reported_with_every_other_problem(tmp_path, fake_module, capsys):
    folder = make_task(tmp_path / "tasks")
    (folder / "valid.json").unlink()
    (folder / "16000" / "test" / "test_0.wav").write_bytes(b"")
    assert cli.main(["run", "--model", fake_module, "--tasks-dir", str(tmp_path / "tasks"), "--out",
                     str(tmp_path / "out"), "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert "missing split file valid.json" in error and "test_0.wav: empty file (0 bytes)" in error


def test_task_results_with_nan_scores_still_write(tmp_path, fake_module, monkeypatch):
    """A NaN score (d_prime, event F on an empty test split) is a result, not an error: the run writes it."""
    def nan_scores(task, features, seeds, **kwargs):
        return {seed: SimpleNamespace(**{**vars(_fake_probe(task, features)), "mean": float("nan")}) for seed in seeds}

    monkeypatch.setattr("eval.probe.evaluate_seeds", nan_scores)
    make_task(tmp_path / "tasks")
    assert cli.main(["run", "--model", fake_module, "--tasks-dir", str(tmp_path / "tasks"), "--out",
                     str(tmp_path / "out"), "--no-progress"]) == 0
    assert np.isnan(_finished_mean(tmp_path / "out"))