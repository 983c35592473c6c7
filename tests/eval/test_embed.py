"""eval.embed: HEAR modules by name, heareval's frame labelling and row order, a cache that resumes after a kill."""
from __future__ import annotations

import itertools
import json
import sys

import numpy as np
import pytest
import torch

from eval.embed import Embedder, embed_task, frame_labels, heareval_file_order, plan_batches
from eval.tasks import validate_task
from tests.builders.paths import PARITY_FIXTURES
from tests.builders.tasks import RATE, add_noise_audio, make_task

pytestmark = pytest.mark.usefixtures("private_hash_cache")


@pytest.mark.parametrize("boundary", [0.0, 0.00005, 0.0001, 0.0002])
def test_frame_labels_follow_heareval_interval_rule(boundary):
    """A frame takes a label when start <= t < end + 0.0001 ms: the IntervalTree query heareval runs."""
    intervaltree = pytest.importorskip("intervaltree")
    events = [{"label": "a", "start": 100.0, "end": 300.0}, {"label": "b", "start": 250.0, "end": 250.0},
              {"label": "a", "start": 280.0, "end": 400.5}]
    timestamps = np.array([99.9999, 100.0, 250.0, 250.0 + boundary, 300.0 + boundary, 400.5 + boundary, 500.0])
    ours = frame_labels(events, timestamps, {"a": 0, "b": 1})
    tree = intervaltree.IntervalTree()
    for event in events:
        tree.addi(event["start"], event["end"] + 0.0001, event["label"])
    expected = np.array([[float("a" in {i.data for i in tree[t]}), float("b" in {i.data for i in tree[t]})]
                         for t in timestamps], dtype=np.float32)
    np.testing.assert_array_equal(ours, expected)


@pytest.mark.parametrize("max_samples", [1, 3200, 10_000, 10**9])
def test_batches_hold_equal_lengths_and_respect_the_sample_budget(max_samples):
    lengths = {f"f{i}": (1600, 3200, 4800)[i % 3] for i in range(20)}
    batches = plan_batches(lengths, max_samples)
    assert sorted(itertools.chain(*batches)) == sorted(lengths)
    for batch in batches:
        assert len({lengths[name] for name in batch}) == 1
        assert len(batch) == 1 or len(batch) * lengths[batch[0]] <= max_samples


@pytest.mark.parametrize("embedding_type,prediction_type,split_mode", [
    ("scene", "multiclass", "trainvaltest"), ("scene", "multilabel", "new_split_kfold"),
    ("event", "multilabel", "trainvaltest")])
def test_features_hold_embeddings_and_targets_in_heareval_order(tmp_path, fake_module, embedding_type,
                                                                prediction_type, split_mode):
    folder = make_task(tmp_path / "tasks", embedding_type=embedding_type, prediction_type=prediction_type,
                       split_mode=split_mode, files_per_split=5)
    add_noise_audio(folder)
    task = validate_task(folder, RATE)
    features = embed_task(task, Embedder(fake_module), tmp_path / "cache", batch_seconds=0.5, progress=False)
    module = sys.modules[fake_module]
    model = module.load_model()
    assert list(features) == list(task.splits)
    for split, split_features in features.items():
        assert split_features.filenames == heareval_file_order(task)[split]
        for row, name in enumerate(split_features.filenames):
            import soundfile as sf

            audio = torch.from_numpy(sf.read(str(task.audio_path(split, name, RATE)), dtype="float32")[0])[None]
            labels = task.labels(split)[name]
            if embedding_type == "scene":
                expected = module.get_scene_embeddings(audio, model).detach().numpy()[0]
                np.testing.assert_allclose(split_features.x[row], expected, rtol=1e-5, atol=1e-6)
                if prediction_type == "multiclass":
                    assert split_features.y[row] == task.label_index[labels[0]]
                else:
                    assert {task.label_vocab[i] for i in np.flatnonzero(split_features.y[row])} == set(labels)
            else:
                expected, stamps = (t.detach().numpy()[0] for t in module.get_timestamp_embeddings(audio, model))
                rows = np.flatnonzero(split_features.file_index == row)
                np.testing.assert_allclose(split_features.x[rows], expected, rtol=1e-5, atol=1e-6)
                np.testing.assert_array_equal(split_features.timestamps_ms[rows], stamps)
                np.testing.assert_array_equal(split_features.y[rows], frame_labels(labels, stamps, task.label_index))
        assert split_features.x.dtype == np.float32
        assert split_features.y.dtype == (np.int64 if prediction_type == "multiclass" else np.float32)
    assert features[task.splits[0]].events is None or features["train"].events == task.labels("train")


def test_killed_run_resumes_at_the_first_unfinished_batch(tmp_path, fake_module):
    folder = make_task(tmp_path / "tasks", files_per_split=6)
    add_noise_audio(folder)
    task = validate_task(folder, RATE)
    module = sys.modules.get(fake_module) or __import__(fake_module)
    reference = embed_task(task, Embedder(fake_module), tmp_path / "reference", batch_seconds=0.45, progress=False)
    total_calls = len(module.CALLS)
    assert total_calls > 3  # several batches per split, so the kill lands mid-split
    module.CALLS.clear()
    module.FAIL_AT_CALL = 4
    with pytest.raises(RuntimeError, match="simulated kill"):
        embed_task(task, Embedder(fake_module), tmp_path / "cache", batch_seconds=0.45, progress=False)
    assert not list((tmp_path / "cache").rglob("*.tmp"))  # nothing half-written was left behind
    module.FAIL_AT_CALL = None
    module.CALLS.clear()
    resumed = embed_task(task, Embedder(fake_module), tmp_path / "cache", batch_seconds=0.45, progress=False)
    assert len(module.CALLS) == total_calls - 4  # finished batches were not recomputed
    for split in task.splits:
        assert resumed[split].filenames == reference[split].filenames
        np.testing.assert_array_equal(resumed[split].x, reference[split].x)
        np.testing.assert_array_equal(resumed[split].y, reference[split].y)
    module.CALLS.clear()
    embed_task(task, Embedder(fake_module), tmp_path / "cache", batch_seconds=0.45, progress=False)
    assert module.CALLS == []  # a finished cache is read, never recomputed


def test_cache_key_separates_options_and_weight_files(tmp_path, fake_module):
    folder = make_task(tmp_path / "tasks")
    task = validate_task(folder, RATE)
    module = __import__(fake_module)
    embed_task(task, Embedder(fake_module), tmp_path / "cache", progress=False)
    calls = len(module.CALLS)
    scaled = embed_task(task, Embedder(fake_module, options={"scale": 2.0}), tmp_path / "cache", progress=False)
    assert len(module.CALLS) == 2 * calls  # other options: other cache entry
    weights = tmp_path / "weights.bin"
    weights.write_bytes(b"v1")
    embed_task(task, Embedder(fake_module, weights=str(weights)), tmp_path / "cache", progress=False)
    embed_task(task, Embedder(fake_module, weights=str(weights)), tmp_path / "cache", progress=False)
    assert len(module.CALLS) == 3 * calls
    weights.write_bytes(b"v2 longer")  # a changed file is a new identity
    embed_task(task, Embedder(fake_module, weights=str(weights)), tmp_path / "cache", progress=False)
    assert len(module.CALLS) == 4 * calls
    assert len(list((tmp_path / "cache" / task.name).iterdir())) == 4
    assert scaled["train"].x.shape[1] == 6


def test_bad_modules_are_named(tmp_path):
    folder = make_task(tmp_path / "tasks")
    task = validate_task(folder, RATE)
    with pytest.raises(ValueError, match="cannot import HEAR module 'no_such_module_xyz'"):
        embed_task(task, Embedder("no_such_module_xyz"), tmp_path / "cache", progress=False)
    with pytest.raises(ValueError, match="lacks"):
        embed_task(task, Embedder("json"), tmp_path / "cache", progress=False)


@pytest.mark.heareval
@pytest.mark.parametrize("embedding_type", ["scene", "event"])
def test_same_rows_targets_and_timestamps_as_heareval(tmp_path, fake_module, embedding_type):
    """heareval's own embedding stage on the same task and module: identical row order, embeddings and targets."""
    pytest.importorskip("tensorflow")
    task_embeddings = pytest.importorskip("heareval.embeddings.task_embeddings")
    import pickle

    prediction_type = "multilabel" if embedding_type == "event" else "multiclass"
    folder = make_task(tmp_path / "tasks", embedding_type=embedding_type, prediction_type=prediction_type,
                       files_per_split=4)
    add_noise_audio(folder, seconds=(0.2,))
    metadata = json.loads((folder / "task_metadata.json").read_text())
    metadata["sample_duration"] = 0.2
    (folder / "task_metadata.json").write_text(json.dumps(metadata))
    out = tmp_path / "heareval"
    task_embeddings.task_embeddings(task_embeddings.Embedding(fake_module), folder, out)
    task = validate_task(folder, RATE)
    ours = embed_task(task, Embedder(fake_module), tmp_path / "cache", progress=False)
    for split in task.splits:
        shape = tuple(json.loads((out / f"{split}.embedding-dimensions.json").read_text()))
        theirs = np.memmap(out / f"{split}.embeddings.npy", dtype=np.float32, mode="r", shape=shape)
        np.testing.assert_allclose(ours[split].x, theirs, rtol=1e-5, atol=1e-6)
        labels = pickle.loads((out / f"{split}.target-labels.pkl").read_bytes())
        if embedding_type == "scene":
            assert [task.label_vocab[i] for i in ours[split].y] == [str(label[0]) for label in labels]
        else:
            assert [sorted(task.label_vocab[i] for i in np.flatnonzero(row)) for row in ours[split].y] == \
                   [sorted(set(frame)) for frame in labels]
            stamps = json.loads((out / f"{split}.filename-timestamps.json").read_text())
            assert [ours[split].filenames[i] for i in ours[split].file_index] == [s.split("/")[-1] for s, _ in stamps]
            np.testing.assert_allclose(ours[split].timestamps_ms, [t for _, t in stamps])


def test_logmel_baseline_matches_a_numpy_recomputation():
    from eval.baselines import logmel

    rng = np.random.default_rng(3)
    audio = rng.uniform(-0.5, 0.5, size=(2, 8000)).astype(np.float32)
    model = logmel.load_model()
    embeddings, timestamps = logmel.get_timestamp_embeddings(torch.from_numpy(audio), model)
    padded = np.pad(audio[0].astype(np.float64), 256, mode="reflect")
    window = np.zeros(512)
    window[56:456] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)  # periodic Hann, centred in n_fft
    frames = np.stack([padded[i * 320:i * 320 + 512] * window for i in range(8000 // 320 + 1)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    expected = np.log(power @ logmel.mel_filterbank().numpy().astype(np.float64) + 1e-6)
    assert embeddings.shape == (2, 26, 128)
    np.testing.assert_allclose(embeddings[0].numpy(), expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(timestamps[1].numpy(), np.arange(26) * 20.0)
    scene = logmel.get_scene_embeddings(torch.from_numpy(audio), model)
    np.testing.assert_allclose(scene[0, :128].numpy(), expected.mean(axis=0), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(scene[0, 128:].numpy(), expected.std(axis=0), rtol=1e-3, atol=1e-3)
    filters = logmel.mel_filterbank().numpy()
    assert filters.shape == (257, 128) and filters.min() >= 0 and np.all(np.diff(filters.argmax(axis=0)) >= 0)
    with pytest.raises(ValueError, match="no weights"):
        logmel.load_model("weights.pt")


def test_state_fingerprint_of_int8_model():
    """Dynamic int8 models pack weights in tuples of quantized tensors: still fingerprinted, stably and distinctly."""
    from eval.embed import state_fingerprint
    from hear_embed import load_model

    checkpoint = str(PARITY_FIXTURES / "acoustic_model_small.pth")
    int8 = state_fingerprint(load_model(checkpoint, quantize="int8"))
    assert int8 == state_fingerprint(load_model(checkpoint, quantize="int8"))
    assert int8 != state_fingerprint(load_model(checkpoint))
