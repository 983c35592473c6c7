"""Submission files (eval/submission.py): heareval's score file layout (compared with a file the real heareval
wrote on the same embeddings), the leaderboard's number format, and the normalised view."""
from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from eval import synthetic
from eval.probe import evaluate_task
from eval.submission import LEADERBOARD, format_score, heareval_scores, normalised_view, read_leaderboard, read_run
from tests.builders.paths import REPO



def test_every_published_cell_is_written_back_identically():
    with open(LEADERBOARD, newline="") as handle:
        cells = [cell for row in list(csv.reader(handle))[1:] for cell in row[1:] if cell]
    assert len(cells) > 500
    assert [format_score(float(cell)) for cell in cells] == cells


@pytest.mark.parametrize("value, cell", [(None, ""), (math.nan, ""), (0.0, "0.0"), (1.0, "1.0"),
                                         (0.12345678912345, "0.1234567891"), (3.349282313e-4, "0.0003349282313")])
def test_format_score(value, cell):
    assert format_score(value) == cell


def test_normalised_view_ranks_and_z_scores():
    published = pd.DataFrame({"model": ["a", "b", "c"], "ESC-50": [0.2, 0.4, 0.6], "Gunshot": [0.9, np.nan, 0.7]})
    view = normalised_view({"ESC-50": 0.5, "Gunshot": 0.95}, published)
    assert view["task"].tolist() == ["ESC-50", "Gunshot"]
    assert view["rank"].tolist() == [2, 1] and view["of"].tolist() == [4, 3]
    assert view["z"].tolist() == pytest.approx([(0.5 - 0.4) / 0.2, (0.95 - 0.8) / np.std([0.9, 0.7], ddof=1)])


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(ValueError, match="holds no task results"):
        read_run(tmp_path)
    (tmp_path / "tasks" / "x").mkdir(parents=True)
    (tmp_path / "tasks" / "x" / "run-1.json").write_text('{"no": "result"}')
    with pytest.raises(ValueError, match=r"run-1\.json: not a task result"):
        read_run(tmp_path)
    (tmp_path / "tasks" / "x" / "other-2.json").write_text('{"no": "result"}')
    with pytest.raises(ValueError, match=r"several runs \(other-2, run-1\); choose one with --run-label"):
        read_run(tmp_path)
    with pytest.raises(ValueError, match="leaderboard file .*missing.csv not found"):
        read_leaderboard(tmp_path / "missing.csv")
    (tmp_path / "board.csv").write_text("model,ESC-50,Not a task\n")
    with pytest.raises(ValueError, match=r"unknown \['Not a task'\]"):
        read_leaderboard(tmp_path / "board.csv")


def _harness_result(task, features) -> dict:
    """What python -m eval run stores as a task's ``result`` (the fields the submission reads)."""
    result = evaluate_task(task, features, grid="faster", n_grid_points=1, progress=False)
    return json.loads(json.dumps({"primary_metric": result.primary_metric, "fold_scores": result.fold_scores,
                                  "mean": result.mean, "best_params": result.best_params, "details": result.details},
                                 sort_keys=True))  # through JSON with sorted keys, as the harness writes it


def _heareval_scores(task, features, tmp_path: Path) -> dict:
    from eval.heareval_compat import write_embedding_dir

    embedding_dir = write_embedding_dir(task.metadata, list(task.label_vocab), features, tmp_path / task.name)
    command = [sys.executable, "-m", "eval.heareval_compat", str(embedding_dir), "--grid", "faster",
               "--grid-points", "1"]
    done = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads((embedding_dir / "test.predicted-scores.json").read_text())


@pytest.mark.heareval
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["scene_kfold", "event"])
def test_score_file_has_heareval_keys(kind, tmp_path):
    """The same embeddings through the real heareval and through the harness + submission: the same keys in the
    same order at every level, the same fixed hparams and the same post-processing structure."""
    pytest.importorskip("heareval")
    if kind == "scene_kfold":
        task = synthetic.scene_task(kfold=True)
        features = synthetic.scene_features(task, n=30)
    else:
        task = synthetic.event_task(evaluation=("event_onset_200ms_fms", "segment_1s_er"))
        features = synthetic.event_features(task, n_files=3)
    theirs = _heareval_scores(task, features, tmp_path)
    ours = heareval_scores(task.name, _harness_result(task, features), evaluation=task.evaluation,
                           use_scoring_for_early_stopping=task.use_scoring_for_early_stopping)
    assert list(ours) == [key for key in theirs if key != "embedding_path"] + ["embedding_path"]
    for key, value in theirs.items():
        if isinstance(value, dict):
            assert list(ours[key]) == list(value), key
    fixed = ("embedding_norm", "hidden_norm", "norm_after_activation", "optim")
    assert {key: ours["hparams"][key] for key in fixed} == {key: theirs["hparams"][key] for key in fixed}
    assert theirs["hparams"]["initialization"].startswith(ours["hparams"]["initialization"][:-1])
    assert [pair[0] for pair in ours["postprocessing"]] == [pair[0] for pair in theirs["postprocessing"]]
    assert ours["score_mode"] == theirs["score_mode"]
    for fold in task.splits if task.is_kfold else ["test"]:
        assert ours[fold]["test_score"] == ours[fold][f"test_{task.evaluation[0]}"]
        assert all(isinstance(ours[fold][key], (int, float)) for key in ("test_loss", "epoch", "time_in_min"))
