"""Frozen embeddings of a task's splits from any HEAR-API module, cached on disk and resumable.

The module is imported by name (``load_model``, ``get_scene_embeddings``, ``get_timestamp_embeddings``).
Files of equal length are stacked into batches of at most ``batch_seconds`` of audio. Each finished batch
is committed atomically as one ``.npz`` in the cache, so a killed run resumes at the first missing batch and
never reads a half-written file; the split's array is assembled in memory from the batches (one write).
The cache is keyed by content: the bytes of every audio file and of the weights file (BLAKE2b, remembered per
file by ``eval.file_hashes``), so audio or weights rewritten in place are never served from an old entry.

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
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from types import ModuleType

import numpy as np
import soundfile as sf
import torch
from tqdm.auto import tqdm

from eval.features import SplitFeatures
from eval.file_hashes import FileHashes
from eval.tasks import Task, audio_location_problem, path_component_problem
from hear_embed import atomic_files, fingerprint
from hear_embed.atomic_files import write_atomically
from hear_embed.audio_io import read_audio

HEAR_FUNCTIONS = ("load_model", "get_scene_embeddings", "get_timestamp_embeddings")
END_TOLERANCE_MS = 0.0001  # heareval widens each event's end by this much before labelling frames
CACHE_FORMAT = 2  # 2: audio and weights files keyed by content (BLAKE2b), not by name, size and mtime

# eval.__main__ still imports this name from here to write task results, which may hold NaN scores (d_prime,
# event F-measures); the one home is hear_embed.atomic_files, where the lead will repoint that import.
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
    """A weights file is identified by its content (BLAKE2b of its bytes); anything else by its string."""
    if not weights:
        return None
    path = Path(weights)
    if path.is_file():
        with FileHashes(path.parent) as hashes:
            return {"file_blake2b": hashes.digest(path)}
    return {"name": weights}


def state_fingerprint(model) -> str | None:
    """:func:`hear_embed.fingerprint.state_fingerprint` of a torch model (None for other models): named weights
    such as "tiny" or "random" are identified by what they hold, not by their name."""
    return fingerprint.state_fingerprint(model) if isinstance(model, torch.nn.Module) else None


def _split_filenames(task: Task, split: str) -> list[str]:
    """File names a split file lists; [] when it is unreadable (validation reports that)."""
    try:
        labels = task.labels(split)
    except (OSError, ValueError):
        return []
    return list(labels) if isinstance(labels, dict) else []


def _audio_digest(task: Task, rate: str, split: str, filename: str, hashes: FileHashes) -> str:
    """BLAKE2b of an audio file's bytes, or why it was not read (validation names the problem)."""
    if path_component_problem(filename) or audio_location_problem(task.path, (rate, split, filename)):
        return "refused"  # never read a file outside the task folder
    try:
        return hashes.digest(os.path.join(task.path, rate, split, filename))
    except FileNotFoundError:
        return "missing"
    except OSError:
        return "unreadable"


def task_identity(task: Task) -> str:
    """SHA-256 of the task's metadata, vocabulary and split files and of the content of every audio file the
    splits name, at every sample rate the task holds: any changed byte gives another identity."""
    digest = hashlib.sha256()
    for name in ["task_metadata.json", "labelvocabulary.csv", *(f"{split}.json" for split in task.splits)]:
        try:
            content = (task.path / name).read_bytes()
        except OSError:  # missing or unreadable: validate_task names it
            content = b"\0missing"
        digest.update(name.encode() + b"\0" + content + b"\0")
    rates = sorted(folder.name for folder in task.path.iterdir() if folder.name.isdigit() and folder.is_dir())
    with FileHashes(task.path) as hashes:
        for split in task.splits:
            for filename in _split_filenames(task, split):
                for rate in rates:
                    file_digest = _audio_digest(task, rate, split, filename, hashes)
                    digest.update(f"{rate}/{split}/{filename}\0{file_digest}\0".encode())
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
        """A weights file counts by its bytes; named weights (or none: the module's default) by a fingerprint
        of the loaded model's tensors."""
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
        return embeddings, timestamps


def _split_plan(task: Task, split: str, split_dir: Path, embedder: Embedder, batch_seconds: float) -> list[list[str]]:
    """The split's batches, fixed at the first run (plan.json, the one place it is read) so a resumed run
    computes the same batches; a finished cache is read without loading the model."""
    plan_path = split_dir / "plan.json"
    if plan_path.is_file():
        return json.loads(plan_path.read_text())["batches"]
    rate = embedder.sample_rate
    lengths = {name: sf.info(str(task.audio_path(split, name, rate))).frames for name in task.labels(split)}
    max_batch_samples = max(1, int(batch_seconds * rate))
    batches = plan_batches(lengths, max_batch_samples)
    atomic_files.write_json_atomically(plan_path, {"batches": batches, "max_batch_samples": max_batch_samples})
    return batches


def _embed_batch(task: Task, split: str, names: list[str], embedder: Embedder) -> dict[str, np.ndarray]:
    """Embeddings (and timestamps) of one batch of files; bad audio or output names the files concerned."""
    paths = [task.audio_path(split, name, embedder.sample_rate) for name in names]
    audio = np.stack([read_audio(path, embedder.sample_rate, strict=True, resample=False) for path in paths])
    try:
        embeddings, timestamps = embedder.embed(audio, task.embedding_type)
    except ValueError as error:
        raise ValueError(f"{error} (the batch's clips, in order: {[str(path) for path in paths]})") from error
    non_finite = [str(path) for path, rows in zip(paths, embeddings) if not np.isfinite(rows).all()]
    if non_finite:
        raise ValueError(f"{embedder.module_name} returned NaN or Inf embeddings for audio file(s) {non_finite}")
    return {"embeddings": embeddings} if timestamps is None else {"embeddings": embeddings, "timestamps": timestamps}


def _compute_missing_batches(task: Task, split: str, split_dir: Path, batches: list[list[str]],
                             embedder: Embedder, progress: bool, shard: tuple[int, int] = (0, 1)) -> None:
    """Compute the missing batches whose index is shard[0] modulo shard[1] (this rank's share)."""
    rank, world_size = shard
    missing = [index for index in range(rank, len(batches), world_size)
               if not (split_dir / f"batch_{index:05d}.npz").is_file()]
    for index in tqdm(missing, desc=f"embed {task.name}/{split}", disable=not progress or not missing, leave=False):
        arrays = _embed_batch(task, split, batches[index], embedder)
        write_atomically(split_dir / f"batch_{index:05d}.npz", lambda out: np.savez(out, **arrays))


def _assemble(task: Task, split: str, split_dir: Path, batches: list[list[str]], order: list[str]) -> SplitFeatures:
    """The cached batches in heareval's row order, with targets. Each batch file is read once and its rows are
    copied straight into arrays allocated at their final size (no per-file arrays kept, no concatenation)."""
    labels = task.labels(split)
    label_index = task.label_index
    position = {name: row for row, name in enumerate(order)}
    paths = [split_dir / f"batch_{index:05d}.npz" for index in range(len(batches))]
    if task.embedding_type == "scene":
        x = None
        for path, names in zip(paths, batches):
            with np.load(path) as data:
                embeddings = data["embeddings"]
            if x is None:
                x = np.empty((len(order), embeddings.shape[1]), dtype=np.float32)
            x[[position[name] for name in names]] = embeddings
        if task.prediction_type == "multiclass":
            y = np.array([label_index[str(labels[name][0])] for name in order], dtype=np.int64)
        else:
            y = np.zeros((len(order), len(label_index)), dtype=np.float32)
            for row, name in enumerate(order):
                y[row, [label_index[str(label)] for label in labels[name]]] = 1.0
        return SplitFeatures(split=split, filenames=order, x=x, y=y)
    frames = {}  # first pass: frames per file, from the (small) timestamp arrays
    for path, names in zip(paths, batches):
        with np.load(path) as data:
            stamps = data["timestamps"]
        frames.update({name: stamps.shape[1] for name in names})
    starts = np.concatenate([[0], np.cumsum([frames[name] for name in order])])
    first = {name: int(starts[row]) for row, name in enumerate(order)}
    x = timestamps = None
    y = np.zeros((int(starts[-1]), len(label_index)), dtype=np.float32)
    for path, names in zip(paths, batches):
        with np.load(path) as data:
            embeddings, stamps = data["embeddings"], data["timestamps"]
        if x is None:
            x = np.empty((int(starts[-1]), embeddings.shape[2]), dtype=np.float32)
            timestamps = np.empty(int(starts[-1]), dtype=np.float64)
        for row, name in enumerate(names):
            rows = slice(first[name], first[name] + frames[name])
            x[rows], timestamps[rows] = embeddings[row], stamps[row]
            y[rows] = frame_labels(labels[name], stamps[row], label_index)
    file_index = np.repeat(np.arange(len(order), dtype=np.int64), [frames[name] for name in order])
    return SplitFeatures(split=split, filenames=order, x=x, y=y, file_index=file_index,
                         timestamps_ms=timestamps, events={name: labels[name] for name in order})


def embed_task(task: Task, embedder: Embedder, cache_dir: str | Path, batch_seconds: float = 60.0,
               progress: bool = True, shard: tuple[int, int] = (0, 1), barrier=None) -> dict[str, SplitFeatures]:
    """Embeddings and targets of every split (or fold) of ``task``, keyed by split name, computed once and
    cached under ``cache_dir/<task>/<key hash>/``.

    shard, barrier (eval.distributed): this process computes only batches rank, rank + world_size, ... of each
    split, then calls ``barrier()`` (every rank must call embed_task) before reading the others' batches."""
    if problem := path_component_problem(task.name):  # a Task built by hand skips validate_task
        raise ValueError(f"task name {task.name!r} {problem}; it names the cache folder")
    key = embedder.cache_key(task)
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    task_dir = Path(cache_dir) / task.name / digest
    if not (task_dir / "key.json").is_file():
        atomic_files.write_json_atomically(task_dir / "key.json", key)
    order = heareval_file_order(task)
    plans = {}
    for split in task.splits:
        split_dir = task_dir / split
        batches = _split_plan(task, split, split_dir, embedder, batch_seconds)
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
