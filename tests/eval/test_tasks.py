"""eval.tasks: heareval's task folder format read back exactly, and one error listing every problem."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
import soundfile as sf

from eval.tasks import TaskError, find_tasks, load_task, validate_task
from tests.builders.tasks import RATE, make_task


@pytest.mark.parametrize("embedding_type,prediction_type", [("scene", "multiclass"), ("scene", "multilabel"),
                                                             ("event", "multilabel")])
@pytest.mark.parametrize("split_mode", ["trainvaltest", "new_split_kfold", "presplit_kfold"])
def test_every_task_type_and_split_mode_is_read(tmp_path, embedding_type, prediction_type, split_mode):
    folder = make_task(tmp_path, embedding_type=embedding_type, prediction_type=prediction_type, split_mode=split_mode,
                       evaluation=("mAP", "top1_acc"))
    task = validate_task(folder, RATE)
    assert (task.embedding_type, task.prediction_type, task.split_mode) == (embedding_type, prediction_type, split_mode)
    assert task.is_kfold == (split_mode != "trainvaltest")
    assert task.splits == (("train", "valid", "test") if split_mode == "trainvaltest" else
                           ("fold00", "fold01", "fold02", "fold03"))
    assert task.label_vocab == ("a", "b", "c") and task.label_index == {"a": 0, "b": 1, "c": 2}
    assert task.primary_metric == "mAP" and task.sample_duration == 0.1
    assert task.use_scoring_for_early_stopping is True and task.evaluation_params == {}
    first = task.splits[0]
    labels = task.labels(first)
    assert list(labels) == [f"{first}_0.wav", f"{first}_1.wav"]
    assert labels == json.loads((folder / f"{first}.json").read_text())
    assert task.audio_path(first, f"{first}_0.wav", RATE) == folder / "16000" / first / f"{first}_0.wav"


def test_vocabulary_is_read_in_idx_order_not_file_order(tmp_path):
    folder = make_task(tmp_path)
    (folder / "labelvocabulary.csv").write_text("idx,label\n2,c\n0,a\n1,b\n")
    assert load_task(folder).label_vocab == ("a", "b", "c")


def test_optional_metadata_is_read(tmp_path):
    folder = make_task(tmp_path, embedding_type="event", prediction_type="multilabel",
                       evaluation=("event_onset_200ms_fms", "segment_1s_er"))
    metadata = json.loads((folder / "task_metadata.json").read_text())
    metadata.update(use_scoring_for_early_stopping=False, evaluation_params={
        "event_postprocessing_grid": {"median_filter_ms": [150], "min_duration": [50]}})
    (folder / "task_metadata.json").write_text(json.dumps(metadata))
    task = load_task(folder)
    assert task.use_scoring_for_early_stopping is False
    assert task.evaluation_params["event_postprocessing_grid"]["median_filter_ms"] == [150]
    assert task.metadata["sample_duration"] == 0.1


def test_one_error_lists_every_problem(tmp_path):
    folder = make_task(tmp_path)
    (folder / "labelvocabulary.csv").write_text("idx,label\n0,a\n1,b\n3,c\n")  # gap at idx 2
    (folder / "16000" / "train" / "train_0.wav").unlink()  # missing audio
    (folder / "16000" / "train" / "train_1.wav").write_bytes(b"not a wav file")  # unreadable audio
    (folder / "valid.json").write_text(json.dumps({"valid_0.wav": ["zebra"]}))  # label not in vocabulary
    (folder / "test.json").unlink()  # missing split file
    with pytest.raises(TaskError) as caught:
        validate_task(folder, RATE)
    message = str(caught.value)
    assert len(caught.value.problems) == 5, message
    for expected in ("idx must run 0..", "train_0.wav: missing audio file", "train_1.wav: unreadable audio",
                     "valid_0.wav: label(s) ['zebra'] not in labelvocabulary.csv", "missing split file test.json"):
        assert expected in message
    assert isinstance(caught.value, ValueError)


def test_metadata_problems_are_all_reported(tmp_path):
    folder = make_task(tmp_path)
    metadata = json.loads((folder / "task_metadata.json").read_text())
    metadata.update(split_mode="bootstrap", embedding_type="frame", evaluation=["f1_magic"])
    (folder / "task_metadata.json").write_text(json.dumps(metadata))
    (folder / "16000" / "valid" / "valid_1.wav").unlink()
    with pytest.raises(TaskError) as caught:
        validate_task(folder, RATE)
    message = str(caught.value)
    for expected in ("unknown split_mode 'bootstrap'", "unknown embedding_type 'frame'", "unknown metric(s) ['f1_magic']",
                     "valid_1.wav: missing audio file"):
        assert expected in message


@pytest.mark.parametrize("mutate,expected", [
    (lambda f: (f / "train.json").write_text("{}"), "train.json: split is empty"),
    (lambda f: (f / "valid.json").write_text(json.dumps({"valid_0.wav": ["a", "b"]})), "exactly one label"),
    (lambda f: sf.write(str(f / "16000" / "test" / "test_0.wav"), np.zeros(100), 8000), "sample rate 8000 Hz"),
    (lambda f: sf.write(str(f / "16000" / "test" / "test_0.wav"), np.zeros((100, 2)), RATE), "2 channels"),
])
def test_single_problems_are_named(tmp_path, mutate, expected):
    folder = make_task(tmp_path)
    mutate(folder)
    with pytest.raises(TaskError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        validate_task(folder, RATE)


def test_missing_sample_rate_folder_is_one_problem_per_split(tmp_path):
    folder = make_task(tmp_path)
    with pytest.raises(TaskError) as caught:
        validate_task(folder, 44100)
    assert len(caught.value.problems) == 3 and "no audio at 44100 Hz" in str(caught.value)


def test_find_tasks_filters_by_name_and_reports_unknown(tmp_path):
    make_task(tmp_path, name="alpha")
    make_task(tmp_path, name="beta")
    assert [p.name for p in find_tasks(tmp_path)] == ["alpha", "beta"]
    assert [p.name for p in find_tasks(tmp_path, ["beta"])] == ["beta"]
    with pytest.raises(ValueError, match="gamma"):
        find_tasks(tmp_path, ["gamma"])


@pytest.mark.parametrize("rows,missing", [("0,a\n1,b\n3,c\n", [2]), ("-1,a\n0,b\n", [1]), ("1,a\n2,b\n", [0])])
def test_vocabulary_indices_must_be_exactly_0_to_n_minus_1(tmp_path, rows, missing):
    folder = make_task(tmp_path)
    (folder / "labelvocabulary.csv").write_text("idx,label\n" + rows)
    with pytest.raises(TaskError, match=r"idx must run 0\.\.\d+ without gaps; missing " + re.escape(str(missing))):
        load_task(folder)
