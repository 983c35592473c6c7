"""Synthetic tasks with features whose best achievable scores are known, for tests and the speed benchmark.

Features are class centres plus Gaussian noise, so a probe can separate them; ``flip`` relabels a fixed
fraction of the test rows (scene) so that the test accuracy of any good probe is 1 - flip, not 1.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from eval.features import SplitFeatures
from eval.tasks import Task


def scene_task(*, kfold: bool = False, n_labels: int = 3, evaluation: tuple[str, ...] = ("top1_acc", "mAP")) -> Task:
    """A multiclass scene task: train/valid/test, or 3 folds (new_split_kfold)."""
    splits = ("fold00", "fold01", "fold02") if kfold else ("train", "valid", "test")
    metadata = {
        "task_name": "synthetic_scene", "embedding_type": "scene", "prediction_type": "multiclass",
        "split_mode": "new_split_kfold" if kfold else "trainvaltest", "splits": list(splits),
        "evaluation": list(evaluation), "sample_duration": 1.0,
    }
    return Task(name="synthetic_scene", path=Path("synthetic_scene"), embedding_type="scene",
                prediction_type="multiclass", split_mode=metadata["split_mode"], splits=splits,
                label_vocab=tuple(f"class{i}" for i in range(n_labels)), evaluation=evaluation,
                sample_duration=1.0, metadata=metadata)


def scene_features(
    task: Task, *, n: int = 60, dim: int = 16, noise: float = 0.3, flip: float = 0.0, seed: int = 0
) -> dict[str, SplitFeatures]:
    """(n, dim) float32 features per split; the last round(flip * n) test rows get a wrong label."""
    rng = np.random.default_rng(seed)
    n_labels = len(task.label_vocab)
    centres = rng.normal(size=(n_labels, dim)).astype(np.float32) * 3
    features = {}
    for split in task.splits:
        y = np.arange(n) % n_labels
        rng.shuffle(y)
        x = (centres[y] + noise * rng.normal(size=(n, dim))).astype(np.float32)
        if split in ("test", "fold00") and flip:
            n_flip = int(round(flip * n))
            y[n - n_flip :] = (y[n - n_flip :] + 1) % n_labels
        features[split] = SplitFeatures(split=split, filenames=[f"{split}_{i:03d}.wav" for i in range(n)],
                                        x=x, y=y.astype(np.int64))
    return features


def event_task(
    *, evaluation: tuple[str, ...] = ("event_onset_200ms_fms", "segment_1s_er"),
    evaluation_params: dict | None = None, use_scoring_for_early_stopping: bool = True,
) -> Task:
    """A two-label event task with train/valid/test splits."""
    metadata = {
        "task_name": "synthetic_event", "embedding_type": "event", "prediction_type": "multilabel",
        "split_mode": "trainvaltest", "splits": ["train", "valid", "test"], "evaluation": list(evaluation),
        "sample_duration": 4.0, "use_scoring_for_early_stopping": use_scoring_for_early_stopping,
        "evaluation_params": evaluation_params or {},
    }
    return Task(name="synthetic_event", path=Path("synthetic_event"), embedding_type="event",
                prediction_type="multilabel", split_mode="trainvaltest", splits=("train", "valid", "test"),
                label_vocab=("dog", "bell"), evaluation=evaluation, sample_duration=4.0,
                use_scoring_for_early_stopping=use_scoring_for_early_stopping,
                evaluation_params=evaluation_params or {}, metadata=metadata)


def event_features(
    task: Task, *, n_files: int = 10, hop_ms: float = 50.0, duration_ms: float = 4000.0, dim: int = 16,
    noise: float = 0.3, seed: int = 0,
) -> dict[str, SplitFeatures]:
    """Frame features (one row per hop) with one event per label per file; frame labels as heareval assigns them."""
    rng = np.random.default_rng(seed)
    n_labels = len(task.label_vocab)
    centres = rng.normal(size=(n_labels, dim)) * 3
    times = np.arange(0.0, duration_ms, hop_ms)
    features = {}
    for split in task.splits:
        xs, ys, events, names = [], [], {}, []
        for f in range(n_files):
            name = f"{split}_{f:03d}.wav"
            names.append(name)
            y = np.zeros((len(times), n_labels), dtype=np.float32)
            events[name] = []
            for c, label in enumerate(task.label_vocab):
                start = float(np.round(rng.uniform(0, duration_ms - 1500), 1))
                end = float(np.round(start + rng.uniform(400, 1400), 1))
                events[name].append({"label": label, "start": start, "end": end})
                y[(times >= start) & (times < end + 0.0001), c] = 1.0
            xs.append(y @ centres + noise * rng.normal(size=(len(times), dim)))
            ys.append(y)
        features[split] = SplitFeatures(
            split=split, filenames=names, x=np.concatenate(xs).astype(np.float32), y=np.concatenate(ys),
            file_index=np.repeat(np.arange(n_files), len(times)), timestamps_ms=np.tile(times, n_files),
            events=events,
        )
    return features
