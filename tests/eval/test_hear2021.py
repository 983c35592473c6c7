"""The HEAR 2021 registry (eval/suites/hear2021.py): its facts agree with the official leaderboard and with
themselves, and a task folder that differs from its entry is reported."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from eval.__main__ import main
from eval.replica import write_replica
from eval.submission import LEADERBOARD
from eval.suites.hear2021 import BY_NAME, TASKS, check_task, lookup, suite_report
from eval.tasks import KNOWN_METRICS, SPLIT_MODES, TRAINVALTEST_SPLITS
from tests.builders.paths import SHARED

SHARED_LEADERBOARD = SHARED / "data" / "hear_leaderboard" / "leaderboard.csv"


def test_shipped_leaderboard_is_the_official_file_unchanged():
    if not SHARED_LEADERBOARD.is_file():
        pytest.skip(f"{SHARED_LEADERBOARD} not present")
    assert LEADERBOARD.read_bytes() == SHARED_LEADERBOARD.read_bytes()


def test_nineteen_tasks_one_per_leaderboard_column():
    with open(LEADERBOARD, newline="") as handle:
        header = next(csv.reader(handle))
    assert [task.column for task in TASKS] == header[1:]
    assert len({task.folder for task in TASKS}) == 19


@pytest.mark.parametrize("entry", TASKS, ids=lambda entry: entry.folder)
def test_entry_is_consistent(entry):
    assert entry.split_mode in SPLIT_MODES and all(metric in KNOWN_METRICS for metric in entry.evaluation)
    if entry.split_mode == "trainvaltest":
        assert entry.splits == TRAINVALTEST_SPLITS
    else:
        assert entry.splits == tuple(f"fold{i:02d}" for i in range(len(entry.splits))) and len(entry.splits) >= 3
    assert set(entry.clips) == set(entry.splits) == set(entry.replica_clips)
    assert all(count > 0 for count in entry.replica_clips.values())
    verified = [count for count in entry.clips.values() if count is not None]
    if entry.clips_total is not None and len(verified) == len(entry.splits):
        assert sum(verified) == entry.clips_total
    if entry.clips_total is not None and None in entry.clips.values():  # replicas keep the verified total
        assert sum(entry.replica_clips.values()) == entry.clips_total
    assert entry.source.startswith("hearbenchmark/hear-preprocess") and entry.clips_note
    assert not entry.labels or len(entry.labels) == (entry.n_labels or len(entry.labels))
    assert (entry.embedding_type == "event") == (entry.prediction_type == "multilabel" and entry.sample_duration == 120)
    assert lookup(entry.folder) is entry and lookup(entry.column) is entry


def test_lookup_names_the_choices():
    with pytest.raises(ValueError, match="several"):
        lookup("speech_commands")
    with pytest.raises(ValueError, match="unknown HEAR 2021 task 'nope'"):
        lookup("nope")


def test_list_prints_the_19_folders(capsys):
    assert main(["replica", "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[0] for line in lines] == [task.folder for task in TASKS]


@pytest.fixture(scope="module")
def gunshot(tmp_path_factory) -> Path:
    return write_replica("Gunshot", 0.1, tmp_path_factory.mktemp("replicas"))


def _edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("tamper, expected", [
    (lambda folder: _edit_json(folder / "task_metadata.json", lambda m: m.update(sample_duration=2.0)),
     "sample_duration: folder has 2.0"),
    (lambda folder: _edit_json(folder / "task_metadata.json", lambda m: m.update(evaluation=["mAP", "top1_acc"])),
     "evaluation: folder has ['mAP', 'top1_acc']"),
    (lambda folder: _edit_json(folder / "fold03.json", lambda labels: labels.pop(next(iter(labels)))),
     "fold03.json: 0 clips, a replica at scale 0.1 has 1"),
    (lambda folder: (folder / "labelvocabulary.csv").write_text("idx,label\n0,mic1\n1,mic2\n2,mic3\n"),
     "3 labels, hear-2021.0.6 has 4"),
])
def test_check_reports_each_mismatch(gunshot, tmp_path, tamper, expected):
    folder = tmp_path / gunshot.name
    folder.mkdir()
    for name in ("task_metadata.json", "labelvocabulary.csv", *[f"{s}.json" for s in BY_NAME[gunshot.name].splits]):
        (folder / name).write_bytes((gunshot / name).read_bytes())
    assert check_task(folder, BY_NAME[gunshot.name]) == []
    tamper(folder)
    problems = check_task(folder, BY_NAME[gunshot.name])
    assert any(expected in problem for problem in problems), problems


def test_real_folder_counts_are_checked_against_the_release(gunshot, tmp_path):
    """Without replica_scale a folder is held to the release's verified counts (Gunshot: 88 clips)."""
    folder = tmp_path / gunshot.name
    folder.mkdir()
    for path in gunshot.glob("*.*"):
        (folder / path.name).write_bytes(path.read_bytes())
    _edit_json(folder / "task_metadata.json", lambda m: (m.pop("replica_scale"), m.pop("replica_format")))
    problems = check_task(folder, BY_NAME[gunshot.name])
    written = sum(BY_NAME[gunshot.name].replica_counts(0.1).values())
    assert problems == [f"{gunshot.name}: {written} clips over all splits, hear-2021.0.6 has 88"]


def test_report_lists_missing_and_unknown(gunshot, tmp_path):
    other = tmp_path / "my_task"
    other.mkdir()
    (other / "task_metadata.json").write_text(json.dumps({"task_name": "my_task"}))
    report = suite_report([gunshot, other])
    assert list(report.present) == [gunshot] and report.problems == [] and report.unknown == [other]
    assert [entry.folder for entry in report.missing] == [t.folder for t in TASKS if t.folder != gunshot.name]
    text = report.text()
    assert "1 of 19 tasks present" in text and "missing: maestro-v3.0.0-5h (Maestro 5h)" in text
    assert "gs://hear2021-archive/tasks/16000/" in text


def test_run_with_a_mismatch_reports_it_and_exits_1(gunshot, tmp_path):
    """The run goes on (scores are written) but the mismatch is printed, saved and makes the exit status 1."""
    tasks = tmp_path / "tasks"
    folder = tasks / gunshot.name
    folder.mkdir(parents=True)
    for path in gunshot.rglob("*"):
        if path.is_file():
            target = folder / path.relative_to(gunshot)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    _edit_json(folder / "task_metadata.json", lambda m: m.update(split_mode="presplit_kfold"))
    code = main(["run", "--model", "eval.baselines.logmel", "--tasks-dir", str(tasks), "--suite", "hear2021",
                 "--grid", "faster", "--out", str(tmp_path / "run"), "--no-progress"])
    assert code == 1 and (tmp_path / "run" / "scores.csv").is_file()
    check = (tmp_path / "run" / "suite_check.txt").read_text()
    assert "mismatch: gunshot_triangulation-v1.0-full: split_mode: folder has 'presplit_kfold'" in check
