"""Our protocol against the real heareval 2021.1.3 (run patched by eval.heareval_compat, in a subprocess)."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from eval import synthetic
from eval.events import frame_layout, frames_to_events
from eval.heareval_compat import apply_patches, write_embedding_dir
from eval.probe import PARAM_GRIDS, evaluate_task, grid_points
from eval.score import event_score, scene_score
from tests.builders.paths import REPO

pytestmark = pytest.mark.heareval
heareval = pytest.importorskip("heareval")


@pytest.fixture(scope="module")
def task_predictions():
    """heareval's prediction module, patched; the weights-only override apply_patches sets is undone after this
    module, so no later test loads a file with weights_only=False by default."""
    before = os.environ.get("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD")
    apply_patches()
    from heareval.predictions import task_predictions

    yield task_predictions
    if before is None:
        os.environ.pop("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", None)
    else:
        os.environ["TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"] = before


@pytest.mark.parametrize("grid", sorted(PARAM_GRIDS))
def test_grid_points_in_heareval_order(task_predictions, grid):
    import random

    from sklearn.model_selection import ParameterGrid

    theirs = {"default": task_predictions.PARAM_GRID, "fast": task_predictions.FAST_PARAM_GRID,
              "faster": task_predictions.FASTER_PARAM_GRID}[grid]
    random.seed(42)  # what seed_everything(42) does to Python's generator before heareval shuffles
    confs = list(ParameterGrid(theirs))
    random.shuffle(confs)
    ours = grid_points(grid, synthetic.scene_task(), n_points=len(confs))
    assert len(ours) == len(confs)
    for mine, their in zip(ours, confs):
        assert {k: v for k, v in their.items() if k in mine and k != "initialization"} == {
            k: v for k, v in mine.items() if k != "initialization"}
        assert their["initialization"].__name__ == mine["initialization"] + "_"


@pytest.mark.parametrize("median_ms, min_duration", [(250, 125), (150, 50), (0, 0)])
def test_events_equal_heareval_create_events(task_predictions, median_ms, min_duration):
    import torch

    task = synthetic.event_task()
    features = synthetic.event_features(task, n_files=4, hop_ms=25.0)["valid"]
    rng = np.random.default_rng(1)
    probs = np.clip(features.y + rng.normal(scale=0.4, size=features.y.shape), 0, 1).astype(np.float32)
    pp = (("median_filter_ms", median_ms), ("min_duration", min_duration))
    ours = frames_to_events(probs, frame_layout(features), list(task.label_vocab), [pp])[pp]
    theirs = task_predictions.get_events_for_all_files(
        torch.from_numpy(probs), [features.filenames[i] for i in features.file_index],
        torch.from_numpy(features.timestamps_ms), dict(enumerate(task.label_vocab)), {}, pp)[pp]
    assert ours == {name: [{**e, "start": float(e["start"]), "end": float(e["end"])} for e in events]
                    for name, events in theirs.items()}


def run_heareval(task, features, tmp_path: Path, grid: str, n_points: int) -> dict:
    embedding_dir = write_embedding_dir(task.metadata, list(task.label_vocab), features, tmp_path / task.name)
    command = [sys.executable, "-m", "eval.heareval_compat", str(embedding_dir), "--grid", grid,
               "--grid-points", str(n_points)]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((embedding_dir / "test.predicted-scores.json").read_text().replace("Infinity", "1e999"))


def test_scene_scores_agree_with_heareval(tmp_path):
    """Well-separated classes, 20 % of test labels flipped: a good probe scores exactly 0.8 on both sides."""
    task = synthetic.scene_task(evaluation=("top1_acc", "mAP"))
    features = synthetic.scene_features(task, n=60, flip=0.2)
    theirs = run_heareval(task, features, tmp_path, grid="faster", n_points=2)["test"]
    with open(tmp_path / task.name / "test.predictions.pkl", "rb") as handle:
        their_probs = pickle.load(handle)["prediction"].numpy()
    targets = np.eye(len(task.label_vocab), dtype=np.float32)[features["test"].y]
    for metric in task.evaluation:  # our metrics on heareval's own predictions: equal up to its float32 logging
        assert scene_score(metric, their_probs, targets)[metric] == pytest.approx(theirs[f"test_{metric}"], abs=1e-6)
    ours = evaluate_task(task, features, grid="faster", n_grid_points=2, progress=False)
    print("heareval", theirs, "ours", ours.fold_scores)
    assert ours.fold_scores["test"]["top1_acc"] == pytest.approx(0.8, abs=0.02)
    for metric in task.evaluation:
        assert abs(ours.fold_scores["test"][metric] - theirs[f"test_{metric}"]) <= 0.01, metric


def test_event_scoring_of_heareval_predictions_is_identical(tmp_path):
    """heareval's own test-frame probabilities, post-processed and scored by us, give heareval's test scores."""
    task = synthetic.event_task(evaluation=("event_onset_offset_50ms_20perc_fms", "event_onset_200ms_fms",
                                            "event_onset_50ms_fms", "segment_1s_er"))
    features = synthetic.event_features(task, n_files=4, hop_ms=25.0, noise=3.0)
    scores = run_heareval(task, features, tmp_path, grid="faster", n_points=1)
    with open(tmp_path / task.name / "test.predictions.pkl", "rb") as handle:
        predictions = pickle.load(handle)
    probs = predictions["prediction"].numpy()  # rows in the order of our test features (same memmap)
    pp = tuple((key, value) for key, value in scores["postprocessing"])
    events = frames_to_events(probs, frame_layout(features["test"]), list(task.label_vocab), [pp])[pp]
    assert any(events.values()), "heareval predicted no event: the check would be vacuous"
    assert events == {name: [{**e, "start": float(e["start"]), "end": float(e["end"])} for e in evs]
                      for name, evs in predictions["predicted_events"].items()}
    for metric in task.evaluation:
        ours = event_score(metric, events, features["test"].events, list(task.label_vocab))
        for key, value in ours.items():  # heareval logs through float32
            assert value == pytest.approx(scores["test"][f"test_{key}"], abs=1e-6, nan_ok=True), key
