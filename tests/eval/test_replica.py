"""Replicas (eval/replica.py): every HEAR 2021 task at a small scale is a valid task folder with the real layout,
and a representative subset runs end to end with --suite hear2021 and becomes a submission."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import soundfile as sf

from eval.__main__ import main
from eval.submission import LEADERBOARD
from eval.replica import write_replica
from eval.suites.hear2021 import BY_NAME, SAMPLE_RATE, TASKS
from eval.tasks import validate_task

SMALL = 1e-4  # every split gets its minimum of one clip, except the largest
# one of each kind: k-fold, trainvaltest, multilabel with clips of varying length, event, pitch; scales that
# give every split a few clips
END_TO_END = {"gunshot_triangulation-v1.0-full": 0.1, "speech_commands-v0.0.2-5h": 3e-4, "fsd50k-v1.0-full": 2e-4,
              "dcase2016_task2-hear2021-full": 1e-3, "nsynth_pitch-v2.2.3-5h": 1e-3}


@pytest.mark.parametrize("entry", [pytest.param(t, marks=pytest.mark.slow) if t.sample_duration == 600 else t
                                   for t in TASKS], ids=lambda entry: entry.folder)
def test_small_replica_is_a_valid_task_with_the_real_layout(entry, tmp_path):
    folder = write_replica(entry.folder, SMALL, tmp_path)
    task = validate_task(folder, SAMPLE_RATE)
    assert folder.name == entry.folder
    expected = entry.metadata()
    assert {key: task.metadata[key] for key in expected} == expected
    counts = entry.replica_counts(SMALL)
    for split in entry.splits:
        labels = task.labels(split)
        assert len(labels) == counts[split]
        for name in labels:
            info = sf.info(str(task.audio_path(split, name, SAMPLE_RATE)))
            if entry.sample_duration is not None:
                assert info.frames == round(entry.sample_duration * SAMPLE_RATE)
            assert info.samplerate == SAMPLE_RATE and info.channels == 1
    if entry.n_labels is not None:
        assert len(task.label_vocab) == entry.n_labels


def test_replica_is_reused_and_never_overwritten(tmp_path):
    folder = write_replica("Gunshot", 0.05, tmp_path)
    stamp = (folder / "fold00.json").stat().st_mtime_ns
    assert write_replica("Gunshot", 0.05, tmp_path) == folder
    assert (folder / "fold00.json").stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="already holds a different task folder"):
        write_replica("Gunshot", 0.1, tmp_path)
    with pytest.raises(ValueError, match="scale must be > 0"):
        write_replica("Gunshot", 0.0, tmp_path / "other")


def test_replica_audio_is_deterministic(tmp_path):
    first = write_replica("Maestro 5h", SMALL, tmp_path / "a")
    second = write_replica("Maestro 5h", SMALL, tmp_path / "b")
    for path in first.rglob("*.*"):
        assert path.read_bytes() == (second / path.relative_to(first)).read_bytes(), path


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("suite")
    for name, scale in END_TO_END.items():
        write_replica(name, scale, root / "tasks")
    code = main(["run", "--model", "hear_embed", "--weights", "tiny", "--tasks-dir", str(root / "tasks"),
                 "--suite", "hear2021", "--grid", "faster", "--out", str(root / "run"), "--no-progress"])
    assert code == 0
    return root / "run"


def test_suite_run_end_to_end(suite_run):
    with open(suite_run / "scores.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert sorted(row["task"] for row in rows) == sorted(BY_NAME[name].task_name for name in END_TO_END)
    assert all(0.0 <= float(row["score"]) <= 1.0 for row in rows)
    check = (suite_run / "suite_check.txt").read_text()
    assert f"{len(END_TO_END)} of 19 tasks present" in check and "mismatch" not in check
    assert check.count("  missing: ") == 19 - len(END_TO_END)


def test_submission_of_a_suite_run(suite_run, tmp_path):
    assert main(["submission", str(suite_run), "--out", str(tmp_path), "--model-name", "hear_embed tiny"]) == 0
    with open(LEADERBOARD, newline="") as handle:
        official = list(csv.reader(handle))
    with open(tmp_path / "leaderboard_row.csv", newline="") as handle:
        header, row = list(csv.reader(handle))
    assert header == official[0] and len(row) == len(header) and row[0] == "hear_embed tiny"
    run_columns = {BY_NAME[name].column for name in END_TO_END}
    for column, cell in zip(header[1:], row[1:]):
        assert (cell != "") == (column in run_columns), column
        if cell:
            assert 0.0 <= float(cell) <= 1.0 and repr(float(f"{float(cell):.10g}")) == cell
    for name in END_TO_END:
        scores = json.loads((tmp_path / name / "test.predicted-scores.json").read_text().replace("NaN", "null"))
        folds = [key for key in scores if key.startswith(("fold", "test"))]
        assert folds == list(BY_NAME[name].splits if BY_NAME[name].split_mode != "trainvaltest" else ["test"])
        assert ("aggregated_scores" in scores) == (len(folds) > 1)
        assert list(scores[folds[0]])[:2] == ["test_loss", "test_score"]
    normalised = (tmp_path / "normalised.csv").read_text().splitlines()
    assert normalised[0] == "task,score,published_mean,published_std,z,rank,of" and len(normalised) == 6
    assert (tmp_path / "normalised.png").stat().st_size > 0
    request = (tmp_path / "pull_request.md").read_text()
    assert "**Scene Embedding Dimensions:** 384" in request and "* [x] no" in request
