"""Read and validate task folders in heareval's on-disk format.

A task folder holds ``task_metadata.json``, ``labelvocabulary.csv`` (header ``idx,label``), one
``<split>.json`` per split (``{filename: labels}``; scene labels are lists of label strings, event labels
lists of ``{"label", "start", "end"}`` in ms) and the audio under ``<sample_rate>/<split>/<filename>``.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf

from hear_embed.audio_io import wav_header_frames

EMBEDDING_TYPES = ("scene", "event")
PREDICTION_TYPES = ("multiclass", "multilabel")
SPLIT_MODES = ("trainvaltest", "new_split_kfold", "presplit_kfold")
TRAINVALTEST_SPLITS = ("train", "valid", "test")
KNOWN_METRICS = (
    "top1_acc", "pitch_acc", "chroma_acc", "mAP", "d_prime", "aucroc", "event_onset_200ms_fms",
    "event_onset_50ms_fms", "event_onset_offset_50ms_20perc_fms", "segment_1s_er",
)
REQUIRED_KEYS = ("task_name", "embedding_type", "prediction_type", "split_mode", "splits", "evaluation")


class TaskError(ValueError):
    """A task folder that cannot be evaluated; ``problems`` lists every problem found."""

    def __init__(self, path: Path, problems: list[str]):
        self.path = Path(path)
        self.problems = list(problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"task folder {self.path} has {len(self.problems)} problem(s):\n{lines}")


@dataclass(frozen=True)
class Task:
    """One HEAR task folder. ``label_vocab[i]`` is the label with index i; ``evaluation[0]`` is primary."""

    name: str
    path: Path
    embedding_type: str  # "scene" | "event"
    prediction_type: str  # "multiclass" | "multilabel"
    split_mode: str  # "trainvaltest" | "new_split_kfold" | "presplit_kfold"
    splits: tuple[str, ...]
    label_vocab: tuple[str, ...]
    evaluation: tuple[str, ...]
    sample_duration: float | None
    use_scoring_for_early_stopping: bool = True
    evaluation_params: dict = field(default_factory=dict, compare=False)
    metadata: dict = field(default_factory=dict, compare=False)

    @property
    def primary_metric(self) -> str:
        return self.evaluation[0]

    @property
    def is_kfold(self) -> bool:
        return self.split_mode != "trainvaltest"

    @property
    def label_index(self) -> dict[str, int]:
        return {label: index for index, label in enumerate(self.label_vocab)}

    def labels(self, split: str) -> dict[str, list]:
        """``{filename: labels}`` of one split, in file order, exactly as ``<split>.json`` holds them."""
        if split not in self.splits:
            raise ValueError(f"task {self.name} has no split {split!r}; its splits are {list(self.splits)}")
        return _read_json(self.path / f"{split}.json")

    def audio_path(self, split: str, filename: str, sample_rate: int) -> Path:
        return self.path / str(sample_rate) / split / filename


def path_component_problem(name) -> str | None:
    """Why ``name`` cannot be one file or folder name inside a task folder (None when it can): it must be a
    non-empty string without path separators or NUL, and not ``.`` or ``..``, so nothing escapes the folder."""
    if not isinstance(name, str) or not name:
        return "must be a non-empty file name"
    if any(character in name for character in "/\\\0") or name in (".", ".."):
        return "must be a single file name (no path separators, not '.' or '..')"
    return None


def _crosses_a_symlink(task_path: Path, levels: tuple[str, ...]) -> bool:
    """Whether ``task_path/levels[0]/levels[1]/...`` passes through a symlink (or a ``..``) at any level."""
    current = os.fspath(task_path)
    for level in levels:
        current = os.path.join(current, level)
        if level == ".." or os.path.islink(current):
            return True
    return False


def audio_location_problem(task_path: Path, levels: tuple[str, ...]) -> str | None:
    """Why the file ``task_path/<rate>/<split>/<file>`` (``levels`` = its three names) may not be read: a symlink
    loop, or a symlink that resolves outside the task folder. None when it stays inside (one lstat per level
    when no symlink is involved: this runs for every file of every run)."""
    if not _crosses_a_symlink(task_path, levels):
        return None
    root = Path(task_path).resolve()
    try:
        target = Path(task_path, *levels).resolve()
    except (OSError, RuntimeError) as error:  # RuntimeError: a symlink loop (Python < 3.13)
        return f"cannot be resolved ({error})"
    if root not in target.parents:
        return f"resolves to {target}, outside the task folder {root} (symlink)"
    return None


def _read_json(path: Path):
    with open(path, encoding="utf-8") as handle:
        return json.load(handle)


def _read_vocabulary(path: Path, problems: list[str]) -> tuple[str, ...]:
    """Labels in idx order; problems (missing file, bad header, idx gaps or duplicates) are appended."""
    if not path.is_file():
        problems.append(f"missing {path.name}")
        return ()
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.reader(handle))
    if not rows or [cell.strip() for cell in rows[0][:2]] != ["idx", "label"]:
        problems.append(f"{path.name}: header must be 'idx,label', got {rows[0] if rows else 'an empty file'}")
        return ()
    by_index: dict[int, str] = {}
    for line, row in enumerate(rows[1:], start=2):
        if len(row) < 2:
            problems.append(f"{path.name} line {line}: expected 'idx,label', got {row}")
            continue
        try:
            index = int(row[0])
        except ValueError:
            problems.append(f"{path.name} line {line}: idx {row[0]!r} is not an integer")
            continue
        if index in by_index:
            problems.append(f"{path.name} line {line}: idx {index} appears twice")
        by_index[index] = row[1]
    missing = sorted(set(range(len(by_index))) - set(by_index))  # none missing: the indices are exactly 0..n-1
    if missing:
        problems.append(f"{path.name}: idx must run 0..{len(by_index) - 1} without gaps; "
                        f"missing {missing}, found {sorted(by_index)}")
    labels = tuple(by_index[index] for index in sorted(by_index))  # still used to check the split labels
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        problems.append(f"{path.name}: label(s) {repeated} appear more than once")
    if not labels:
        problems.append(f"{path.name}: the vocabulary is empty")
    return labels


def _metadata_problems(metadata: dict) -> list[str]:
    problems = [f"task_metadata.json: missing key {key!r}" for key in REQUIRED_KEYS if key not in metadata]
    checks = (("embedding_type", EMBEDDING_TYPES), ("prediction_type", PREDICTION_TYPES), ("split_mode", SPLIT_MODES))
    for key, allowed in checks:
        if key in metadata and metadata[key] not in allowed:
            problems.append(f"task_metadata.json: unknown {key} {metadata[key]!r}; expected one of {list(allowed)}")
    splits = metadata.get("splits", [])
    if not isinstance(splits, list) or not splits or not all(isinstance(split, str) for split in splits):
        problems.append(f"task_metadata.json: 'splits' must be a non-empty list of names, got {splits!r}")
    elif metadata.get("split_mode") == "trainvaltest" and sorted(splits) != sorted(TRAINVALTEST_SPLITS):
        problems.append(f"task_metadata.json: split_mode trainvaltest needs splits {list(TRAINVALTEST_SPLITS)}, got {splits}")
    elif metadata.get("split_mode") in SPLIT_MODES[1:] and len(set(splits)) < 3:
        problems.append(f"task_metadata.json: k-fold needs at least 3 distinct folds (test, valid, train), got {splits}")
    evaluation = metadata.get("evaluation", [])
    if not isinstance(evaluation, list) or not evaluation:
        problems.append(f"task_metadata.json: 'evaluation' must be a non-empty list of metrics, got {evaluation!r}")
    else:
        unknown = [metric for metric in evaluation if metric not in KNOWN_METRICS]
        if unknown:
            problems.append(f"task_metadata.json: unknown metric(s) {unknown}; known: {list(KNOWN_METRICS)}")
    if metadata.get("embedding_type") == "event" and metadata.get("prediction_type") == "multiclass":
        problems.append("task_metadata.json: event tasks must use prediction_type multilabel")
    if "task_name" in metadata and (problem := path_component_problem(metadata["task_name"])):
        problems.append(f"task_metadata.json: task_name {metadata['task_name']!r} {problem}")
    if isinstance(splits, list):
        problems += [f"task_metadata.json: split name {split!r} {problem}"
                     for split in splits if isinstance(split, str) and (problem := path_component_problem(split))]
    return problems


def _read_task(path: Path) -> tuple[dict, tuple[str, ...], list[str]]:
    """Metadata, vocabulary and the problems found reading them."""
    problems: list[str] = []
    metadata: dict = {}
    metadata_path = path / "task_metadata.json"
    if not metadata_path.is_file():
        problems.append("missing task_metadata.json")
    else:
        try:
            metadata = _read_json(metadata_path)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            problems.append(f"task_metadata.json is not valid JSON: {error}")
        if not isinstance(metadata, dict):
            problems.append("task_metadata.json must hold a JSON object")
            metadata = {}
    if metadata:
        problems += _metadata_problems(metadata)
    vocab = _read_vocabulary(path / "labelvocabulary.csv", problems)
    return metadata, vocab, problems


def _make_task(path: Path, metadata: dict, vocab: tuple[str, ...]) -> Task:
    return Task(
        name=str(metadata["task_name"]), path=path, embedding_type=metadata["embedding_type"],
        prediction_type=metadata["prediction_type"], split_mode=metadata["split_mode"],
        splits=tuple(metadata["splits"]), label_vocab=vocab, evaluation=tuple(metadata["evaluation"]),
        sample_duration=metadata.get("sample_duration"),
        use_scoring_for_early_stopping=bool(metadata.get("use_scoring_for_early_stopping", True)),
        evaluation_params=dict(metadata.get("evaluation_params") or {}), metadata=metadata,
    )


def load_task(path: str | Path) -> Task:
    """Read a task folder's metadata and vocabulary (no audio or label checks: see :func:`validate_task`)."""
    path = Path(path)
    metadata, vocab, problems = _read_task(path)
    if problems:
        raise TaskError(path, problems)
    return _make_task(path, metadata, vocab)


def _label_problems(metadata: dict, vocab: tuple[str, ...], split: str, labels: dict) -> list[str]:
    """Labels of one split: the right shape for the task type and every label in the vocabulary."""
    known = set(vocab)
    problems = []
    for filename, entry in labels.items():
        where = f"{split}.json {filename}"
        if not isinstance(entry, list):
            problems.append(f"{where}: labels must be a list, got {type(entry).__name__}")
            continue
        if metadata.get("embedding_type") == "event":
            names = []
            for event in entry:
                if not isinstance(event, dict) or not {"label", "start", "end"} <= set(event):
                    problems.append(f"{where}: event must have label, start and end (ms), got {event}")
                    continue
                names.append(str(event["label"]))
                start, end = event["start"], event["end"]
                if not all(isinstance(value, (int, float)) for value in (start, end)) or start > end:
                    problems.append(f"{where}: event times must be numbers with start <= end (ms), got {event}")
        else:
            names = [str(label) for label in entry]
            if metadata.get("prediction_type") == "multiclass" and len(names) != 1:
                problems.append(f"{where}: multiclass needs exactly one label, got {entry}")
        unknown = sorted({name for name in names if name not in known})
        if known and unknown:
            problems.append(f"{where}: label(s) {unknown} not in labelvocabulary.csv")
    return problems


def _audio_file_problems(task_path: Path, levels: tuple[str, str, str], sample_rate: int) -> list[str]:
    """The audio file ``task_path/<rate>/<split>/<file>``, cheaply (header only): inside the task folder,
    present, non-empty, readable, mono at ``sample_rate``, at least one frame, not truncated."""
    if problem := audio_location_problem(task_path, levels):
        return [problem]
    audio = Path(task_path, *levels)
    if not audio.is_file():
        return ["missing audio file"]
    if audio.stat().st_size == 0:
        return ["empty file (0 bytes)"]
    try:
        info = sf.info(str(audio))
        declared = wav_header_frames(audio)
    except (sf.LibsndfileError, RuntimeError, OSError) as error:
        return [f"unreadable audio ({error})"]
    problems = []
    if info.samplerate != sample_rate:
        problems.append(f"sample rate {info.samplerate} Hz, expected {sample_rate} Hz")
    if info.channels != 1:
        problems.append(f"{info.channels} channels, expected mono")
    if info.frames == 0:
        problems.append("empty audio (0 samples)")
    if declared is not None and declared > info.frames:  # libsndfile reads only what is there, silently
        problems.append(f"truncated wav: the header declares {declared} frames, the file holds {info.frames}")
    return problems


def _audio_problems(path: Path, split: str, filenames, sample_rate: int) -> list[str]:
    """Every file name is one path component and every file passes :func:`_audio_file_problems`."""
    folder = path / str(sample_rate) / split
    if not folder.is_dir():
        return [f"missing audio folder {sample_rate}/{split} (no audio at {sample_rate} Hz for split {split})"]
    problems = []
    for filename in filenames:
        if problem := path_component_problem(filename):
            problems.append(f"{split}.json entry {filename!r}: {problem}")
            continue
        problems += [f"{sample_rate}/{split}/{filename}: {problem}"
                     for problem in _audio_file_problems(path, (str(sample_rate), split, filename), sample_rate)]
    return problems


def _split_problems(path: Path, metadata: dict, vocab: tuple[str, ...], sample_rate: int) -> list[str]:
    splits = metadata.get("splits")
    if not isinstance(splits, list) or not all(isinstance(split, str) for split in splits):
        return []  # already reported by _metadata_problems
    problems = []
    for split in splits:
        split_path = path / f"{split}.json"
        if not split_path.is_file():
            problems.append(f"missing split file {split}.json")
            continue
        try:
            labels = _read_json(split_path)
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            problems.append(f"{split}.json is not valid JSON: {error}")
            continue
        if not isinstance(labels, dict) or not labels:
            problems.append(f"{split}.json: split is empty (expected a non-empty {{filename: labels}} object)")
            continue
        problems += _label_problems(metadata, vocab, split, labels)
        problems += _audio_problems(path, split, labels, sample_rate)
    return problems


def validate_task(path: str | Path, sample_rate: int) -> Task:
    """Check a whole task folder before spending compute; raise one :class:`TaskError` listing every problem
    (metadata, vocabulary, split files, labels, audio files)."""
    path = Path(path)
    metadata, vocab, problems = _read_task(path)
    problems += _split_problems(path, metadata, vocab, sample_rate)
    if problems:
        raise TaskError(path, problems)
    return _make_task(path, metadata, vocab)


def find_tasks(tasks_dir: str | Path, names: list[str] | None = None) -> list[Path]:
    """Task folders (those holding task_metadata.json) directly under ``tasks_dir``, sorted; ``names`` filters
    by folder name or task_name."""
    tasks_dir = Path(tasks_dir)
    if not tasks_dir.is_dir():
        raise ValueError(f"tasks directory {tasks_dir} does not exist")
    folders = sorted(p.parent for p in tasks_dir.glob("*/task_metadata.json"))
    if (tasks_dir / "task_metadata.json").is_file():
        folders.insert(0, tasks_dir)
    if names:
        def task_name(folder: Path) -> str:
            try:
                return str(_read_json(folder / "task_metadata.json").get("task_name", folder.name))
            except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
                return folder.name
        chosen = [f for f in folders if f.name in names or task_name(f) in names]
        found = {f.name for f in chosen} | {task_name(f) for f in chosen}
        missing = [name for name in names if name not in found]
        if missing:
            raise ValueError(f"task(s) {missing} not found under {tasks_dir}; available: {[f.name for f in folders]}")
        folders = chosen
    if not folders:
        raise ValueError(f"no task folders (with task_metadata.json) under {tasks_dir}")
    return folders
