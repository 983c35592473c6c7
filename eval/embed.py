"""Frozen embeddings of a task's splits from any HEAR-API module, cached on disk and resumable.

The module is imported by name (``load_model``, ``get_scene_embeddings``, ``get_timestamp_embeddings``).
Files of equal length are stacked into batches of at most ``batch_seconds`` of audio. Each finished batch
is committed atomically as one ``.npz`` in the cache, so a killed run resumes at the first missing batch and
never reads a half-written file; the split's array is assembled in memory from the batches (one write).

Row order follows heareval: per split (in metadata order) the files of ``<split>.json`` are shuffled by one
``random.Random(0)`` shared across the task's splits; event tasks then list every frame of each file in turn.
A frame at time t takes every label whose event has start <= t < end + 0.0001 (ms), as heareval does.
"""
from __future__ import annotations

import hashlib
import importlib
import json
import os
import random
import tempfile
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import ModuleType

import numpy as np
import soundfile as sf
import torch
from tqdm.auto import tqdm

from eval.features import SplitFeatures
from eval.tasks import Task

HEAR_FUNCTIONS = ("load_model", "get_scene_embeddings", "get_timestamp_embeddings")
END_TOLERANCE_MS = 0.0001  # heareval widens each event's end by this much before labelling frames
CACHE_FORMAT = 1


def write_atomically(path: Path, write) -> None:
    """Call ``write(file_object)`` on a temp file beside ``path``, then rename it onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as out:
            write(out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def _json_value(value):
    """numpy scalars and arrays as plain JSON values."""
    return value.tolist() if hasattr(value, "tolist") else str(value)


def write_json_atomically(path: Path, data) -> None:
    text = json.dumps(data, indent=1, sort_keys=True, default=_json_value)
    write_atomically(path, lambda out: out.write(text.encode()))


def import_hear_module(name: str) -> ModuleType:
    """Import a HEAR-API module by name, checking it has the three API functions."""
    try:
        module = importlib.import_module(name)
    except ImportError as error:
        raise ValueError(f"cannot import HEAR module {name!r}: {error}") from error
    missing = [function for function in HEAR_FUNCTIONS if not callable(getattr(module, function, None))]
    if missing:
        raise ValueError(f"module {name!r} is not a HEAR-API module: it lacks {missing}")
    return module


def weights_identity(weights: str | None) -> dict | None:
    """A file is identified by resolved path, size and modification time; anything else by its string."""
    if not weights:
        return None
    path = Path(weights)
    if path.is_file():
        stat = path.stat()
        return {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    return {"name": weights}


def state_fingerprint(model) -> str | None:
    """SHA-256 of a torch model's parameters and buffers (None for other models): named weights such as
    "tiny" or "random" are identified by what they hold, not by their name."""
    if not isinstance(model, torch.nn.Module):
        return None
    digest = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        digest.update(name.encode())
        _hash_state_value(digest, value)
    return digest.hexdigest()


def _hash_state_value(digest, value) -> None:
    """Feed a state_dict value to ``digest``: plain and quantized tensors (int8 models pack tuples), else its repr."""
    if isinstance(value, (tuple, list)):
        for item in value:
            _hash_state_value(digest, item)
    elif torch.is_tensor(value) and value.is_quantized:
        digest.update(value.int_repr().cpu().contiguous().numpy().tobytes() + repr(value.qscheme()).encode())
        _hash_state_value(digest, value.q_per_channel_scales() if value.qscheme() == torch.per_channel_affine
                          else torch.tensor([value.q_scale()]))
    elif torch.is_tensor(value):
        digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    else:
        digest.update(repr(value).encode())


def task_identity(task: Task) -> str:
    """SHA-256 of the task's metadata, vocabulary and split files, plus every audio file's name and size."""
    digest = hashlib.sha256()
    for name in ["task_metadata.json", "labelvocabulary.csv", *(f"{split}.json" for split in task.splits)]:
        digest.update(name.encode() + b"\0" + (task.path / name).read_bytes())
    for audio in sorted(task.path.glob("*/*/*")):
        if audio.is_file():
            digest.update(f"{audio.relative_to(task.path)}:{audio.stat().st_size}".encode())
    return digest.hexdigest()


def heareval_file_order(task: Task) -> dict[str, list[str]]:
    """File order of each split's rows, as heareval's embedding stage writes them."""
    prng = random.Random(0)
    order = {}
    for split in task.splits:
        files = list(task.labels(split))
        prng.shuffle(files)
        order[split] = files
    return order


def frame_labels(events: list[dict], timestamps_ms: np.ndarray, label_index: dict[str, int]) -> np.ndarray:
    """(T,) ms -> (T, n_labels) float32 multi-hot: label on where start <= t < end + 0.0001."""
    target = np.zeros((len(timestamps_ms), len(label_index)), dtype=np.float32)
    for event in events:
        active = (timestamps_ms >= event["start"]) & (timestamps_ms < event["end"] + END_TOLERANCE_MS)
        target[active, label_index[str(event["label"])]] = 1.0
    return target


def plan_batches(lengths: dict[str, int], max_batch_samples: int) -> list[list[str]]:
    """Group files of equal length (samples) into batches of at most ``max_batch_samples`` samples
    (at least one file each); shortest first, file order kept within a length."""
    by_length: dict[int, list[str]] = {}
    for filename, length in lengths.items():
        by_length.setdefault(length, []).append(filename)
    batches = []
    for length in sorted(by_length):
        files = by_length[length]
        size = max(1, max_batch_samples // max(length, 1))
        batches += [files[start:start + size] for start in range(0, len(files), size)]
    return batches


@dataclass
class Embedder:
    """A HEAR module with its weights and options; the model is loaded on first use."""

    module_name: str
    weights: str | None = None
    options: dict = field(default_factory=dict)
    device: str = "cpu"
    _module: ModuleType | None = field(default=None, repr=False)
    _model: object = field(default=None, repr=False)

    @property
    def module(self) -> ModuleType:
        if self._module is None:
            self._module = import_hear_module(self.module_name)
        return self._module

    @property
    def model(self):
        if self._model is None:
            if self.weights:
                model = self.module.load_model(self.weights, **self.options)
            else:
                model = self.module.load_model(**self.options)
            if not isinstance(getattr(model, "sample_rate", None), int):
                raise ValueError(f"{self.module_name}.load_model returned a model without an integer sample_rate")
            if isinstance(model, torch.nn.Module):
                model = model.to(self.device).eval()
            self._model = model
        return self._model

    @property
    def sample_rate(self) -> int:
        return int(self.model.sample_rate)

    @cached_property
    def parameter_count(self) -> int | None:
        """Parameters of a torch model (None for other models)."""
        if not isinstance(self.model, torch.nn.Module):
            return None
        return sum(parameter.numel() for parameter in self.model.parameters())

    @cached_property
    def weights_key(self) -> dict:
        """A weights file counts by path, size and mtime; named weights (or none: the module's default) by a
        fingerprint of the loaded model's tensors."""
        identity = weights_identity(self.weights)
        if identity is None or "name" in identity:
            identity = {**(identity or {}), "fingerprint": state_fingerprint(self.model)}
        return identity

    def cache_key(self, task: Task) -> dict:
        """What the cached embeddings of ``task`` depend on."""
        return {
            "format": CACHE_FORMAT, "module": self.module_name,
            "module_version": str(getattr(self.module, "__version__", "")),
            "weights": self.weights_key, "options": self.options, "task": task.name,
            "task_identity": task_identity(task),
        }

    def embed(self, audio: np.ndarray, embedding_type: str) -> tuple[np.ndarray, np.ndarray | None]:
        """(B, samples) float32 -> scene (B, D) or event (B, T, D) with timestamps (B, T) ms."""
        batch = torch.from_numpy(audio).to(self.device)
        with torch.no_grad():
            if embedding_type == "scene":
                embeddings, timestamps = self.module.get_scene_embeddings(batch, self.model), None
            else:
                embeddings, timestamps = self.module.get_timestamp_embeddings(batch, self.model)
        embeddings = np.asarray(embeddings.detach().cpu() if torch.is_tensor(embeddings) else embeddings, np.float32)
        expected_dims = 2 if embedding_type == "scene" else 3
        if embeddings.ndim != expected_dims or embeddings.shape[0] != len(audio):
            raise ValueError(f"{self.module_name} returned {embedding_type} embeddings of shape {embeddings.shape} "
                             f"for a batch of {len(audio)} clips; expected {expected_dims} dimensions")
        if timestamps is not None:
            timestamps = np.asarray(timestamps.detach().cpu() if torch.is_tensor(timestamps) else timestamps, np.float64)
            if timestamps.shape != embeddings.shape[:2]:
                raise ValueError(f"{self.module_name} returned timestamps of shape {timestamps.shape} for embeddings "
                                 f"of shape {embeddings.shape}; expected {embeddings.shape[:2]}")
        if not np.isfinite(embeddings).all():
            raise ValueError(f"{self.module_name} returned NaN or Inf embeddings")
        return embeddings, timestamps


def _read_audio(path: Path, sample_rate: int) -> np.ndarray:
    audio, rate = sf.read(str(path), dtype="float32", always_2d=False)
    if rate != sample_rate or audio.ndim != 1:
        raise ValueError(f"{path}: expected mono audio at {sample_rate} Hz, got {rate} Hz with shape {audio.shape}")
    return audio


def _split_plan(task: Task, split: str, split_dir: Path, sample_rate: int, max_batch_samples: int) -> list[list[str]]:
    """The split's batches, fixed at the first run (plan.json) so a resumed run computes the same batches."""
    plan_path = split_dir / "plan.json"
    if plan_path.is_file():
        return json.loads(plan_path.read_text())["batches"]
    lengths = {name: sf.info(str(task.audio_path(split, name, sample_rate))).frames for name in task.labels(split)}
    batches = plan_batches(lengths, max_batch_samples)
    write_json_atomically(plan_path, {"batches": batches, "max_batch_samples": max_batch_samples})
    return batches


def _compute_missing_batches(task: Task, split: str, split_dir: Path, batches: list[list[str]],
                             embedder: Embedder, progress: bool, shard: tuple[int, int] = (0, 1)) -> None:
    """Compute the missing batches whose index is shard[0] modulo shard[1] (this rank's share)."""
    rank, world_size = shard
    missing = [index for index in range(rank, len(batches), world_size)
               if not (split_dir / f"batch_{index:05d}.npz").is_file()]
    for index in tqdm(missing, desc=f"embed {task.name}/{split}", disable=not progress or not missing, leave=False):
        audio = np.stack([_read_audio(task.audio_path(split, name, embedder.sample_rate), embedder.sample_rate)
                          for name in batches[index]])
        embeddings, timestamps = embedder.embed(audio, task.embedding_type)
        arrays = {"embeddings": embeddings} if timestamps is None else {"embeddings": embeddings, "timestamps": timestamps}
        write_atomically(split_dir / f"batch_{index:05d}.npz", lambda out: np.savez(out, **arrays))


def _assemble(task: Task, split: str, split_dir: Path, batches: list[list[str]], order: list[str]) -> SplitFeatures:
    """Stack the cached batches into heareval's row order, with targets."""
    rows: dict[str, np.ndarray] = {}
    stamps: dict[str, np.ndarray] = {}
    for index, names in enumerate(batches):
        with np.load(split_dir / f"batch_{index:05d}.npz") as data:
            for row, name in enumerate(names):
                rows[name] = data["embeddings"][row]
                if "timestamps" in data:
                    stamps[name] = data["timestamps"][row]
    labels = task.labels(split)
    label_index = task.label_index
    if task.embedding_type == "scene":
        x = np.stack([rows[name] for name in order]).astype(np.float32)
        if task.prediction_type == "multiclass":
            y = np.array([label_index[str(labels[name][0])] for name in order], dtype=np.int64)
        else:
            y = np.zeros((len(order), len(label_index)), dtype=np.float32)
            for row, name in enumerate(order):
                y[row, [label_index[str(label)] for label in labels[name]]] = 1.0
        return SplitFeatures(split=split, filenames=order, x=x, y=y)
    x = np.concatenate([rows[name] for name in order]).astype(np.float32)
    y = np.concatenate([frame_labels(labels[name], stamps[name], label_index) for name in order])
    file_index = np.concatenate([np.full(len(stamps[name]), i, dtype=np.int64) for i, name in enumerate(order)])
    timestamps = np.concatenate([stamps[name] for name in order]).astype(np.float64)
    return SplitFeatures(split=split, filenames=order, x=x, y=y, file_index=file_index,
                         timestamps_ms=timestamps, events={name: labels[name] for name in order})


def embed_task(task: Task, embedder: Embedder, cache_dir: str | Path, batch_seconds: float = 60.0,
               progress: bool = True, shard: tuple[int, int] = (0, 1), barrier=None) -> dict[str, SplitFeatures]:
    """Embeddings and targets of every split (or fold) of ``task``, keyed by split name, computed once and
    cached under ``cache_dir/<task>/<key hash>/``.

    shard, barrier (eval.distributed): this process computes only batches rank, rank + world_size, ... of each
    split, then calls ``barrier()`` (every rank must call embed_task) before reading the others' batches."""
    key = embedder.cache_key(task)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    task_dir = Path(cache_dir) / task.name / digest
    if not (task_dir / "key.json").is_file():
        write_json_atomically(task_dir / "key.json", key)
    order = heareval_file_order(task)
    plans = {}
    for split in task.splits:
        split_dir = task_dir / split
        batches = None
        if (split_dir / "plan.json").is_file():
            batches = json.loads((split_dir / "plan.json").read_text())["batches"]
        if batches is None or any(not (split_dir / f"batch_{i:05d}.npz").is_file() for i in range(len(batches))):
            max_samples = max(1, int(batch_seconds * embedder.sample_rate))
            batches = _split_plan(task, split, split_dir, embedder.sample_rate, max_samples)
            _compute_missing_batches(task, split, split_dir, batches, embedder, progress, shard)
        plans[split] = batches
    if barrier is not None:
        barrier()
    features = {}
    for split, batches in plans.items():
        split_dir = task_dir / split
        missing = [i for i in range(len(batches)) if not (split_dir / f"batch_{i:05d}.npz").is_file()]
        if missing:
            raise ValueError(f"{task.name}/{split}: cache batches {missing[:5]} are missing in {split_dir} "
                               "(another rank did not finish its share); rerun to complete them")
        features[split] = _assemble(task, split, split_dir, batches, order[split])
    return features
