"""The batched probe (eval.probe_batched) against the sequential reference (eval.probe.train_probe), member by
member: same best epoch, validation score, post-processing and checkpoint; logits on unseen rows within 1e-4."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from eval import synthetic
from eval.probe import PARAM_GRIDS, SplitScorer, build_mlp, evaluate_seeds, evaluate_task, grid_points
from eval.probe import predict_probabilities, train_probe
from eval.probe_batched import Member, group_key, train_probes, train_probes_on_splits

BASE = {k: v[0] for k, v in PARAM_GRIDS["default"].items()}


def mixed_members() -> list[Member]:
    """Members differing in every per-member setting, in two groups, with a leftover training batch."""
    varied = [
        {"hidden_layers": 1, "hidden_dim": 32, "lr": 3.2e-3, "max_epochs": 9, "check_val_every_n_epoch": 3,
         "patience": 1, "initialization": "xavier_uniform"},
        {"hidden_layers": 1, "hidden_dim": 32, "lr": 1e-3, "max_epochs": 12, "check_val_every_n_epoch": 2,
         "patience": 20, "initialization": "xavier_normal", "dropout": 0.5},
        {"hidden_layers": 1, "hidden_dim": 32, "lr": 1e-4, "max_epochs": 4, "check_val_every_n_epoch": 1,
         "patience": 2, "dropout": 0.0},
        {"hidden_layers": 2, "hidden_dim": 32, "lr": 3.2e-4, "max_epochs": 6, "check_val_every_n_epoch": 3},
        {"hidden_layers": 2, "hidden_dim": 32, "lr": 3.2e-3, "max_epochs": 6, "check_val_every_n_epoch": 1},
        {"hidden_layers": 0, "hidden_dim": 32, "lr": 1e-2, "max_epochs": 5, "check_val_every_n_epoch": 1},
    ]
    return [Member(conf={**BASE, "batch_size": 50, **v}, seed=seed) for seed, v in enumerate(varied)]


def without_timings(result) -> dict:
    """A TaskResult as a dict without the measured training minutes (heareval's time_in_min), which vary."""
    fields = dataclasses.asdict(result)
    fields["details"] = {fold: {k: v for k, v in detail.items() if k != "time_in_min"}
                         for fold, detail in fields["details"].items()}
    return fields


def assert_same_fits(members, task, train, valid, test_x):
    sequential = [train_probe(m.conf, task, train, valid, "cpu", seed=m.seed) for m in members]
    batched = train_probes(members, task, train, valid, "cpu")
    multiclass = task.prediction_type == "multiclass"
    for member, one, many in zip(members, sequential, batched):
        assert (many.epoch, many.validation_score, many.postprocessing) == (
            one.epoch, one.validation_score, one.postprocessing), member.conf
        logits = []
        for fit in (one, many):
            model = build_mlp(test_x.shape[1], len(task.label_vocab), member.conf)
            model.load_state_dict(fit.state)
            logits.append(predict_probabilities(model, torch.as_tensor(test_x), multiclass)[0])
        assert torch.allclose(logits[0], logits[1], rtol=0, atol=1e-4), member.conf


def test_scene_members_equal_the_sequential_path():
    task = synthetic.scene_task()
    features = synthetic.scene_features(task, n=120, noise=0.8, flip=0.1)
    members = mixed_members()
    assert len({group_key(m.conf) for m in members}) == 3
    train = (features["train"].x, features["train"].y)
    assert_same_fits(members, task, train, SplitScorer(task, features["valid"]), features["test"].x)


@pytest.mark.parametrize("use_scoring", [True, False])
def test_event_members_equal_the_sequential_path(use_scoring):
    params = {} if use_scoring else {"event_postprocessing_grid": {"median_filter_ms": [150], "min_duration": [50]}}
    task = synthetic.event_task(use_scoring_for_early_stopping=use_scoring, evaluation_params=params)
    features = synthetic.event_features(task, n_files=4)
    members = [m for m in mixed_members() if m.conf["max_epochs"] <= 6]  # multilabel (BCE) loss
    train = (features["train"].x, features["train"].y)
    assert_same_fits(members, task, train, SplitScorer(task, features["valid"]), features["test"].x)


def test_default_grid_members_equal_the_sequential_path():
    task = synthetic.scene_task()
    features = synthetic.scene_features(task, n=40, noise=1.5, flip=0.2)
    members = [Member(conf={**c, "hidden_dim": 64, "max_epochs": 6}, seed=i)
               for i, c in enumerate(grid_points("default", task))]
    train = (features["train"].x, features["train"].y)
    assert_same_fits(members, task, train, SplitScorer(task, features["valid"]), features["test"].x)


@pytest.mark.parametrize("kfold", [False, True])
def test_evaluate_task_batched_equals_sequential(kfold):
    task = synthetic.scene_task(kfold=kfold)
    features = synthetic.scene_features(task, n=60, noise=1.0, flip=0.2)
    options = {"grid": "faster", "n_grid_points": 4, "progress": False, "seed": 1}
    one, many = evaluate_task(task, features, batched=False, **options), evaluate_task(task, features, **options)
    assert without_timings(one) == without_timings(many)


def test_seeds_train_together_and_equal_separate_runs():
    task = synthetic.event_task()
    features = synthetic.event_features(task, n_files=4)
    options = {"grid": "faster", "n_grid_points": 2, "progress": False}
    together = evaluate_seeds(task, features, seeds=[0, 3], **options)
    assert list(together) == [0, 3]
    for seed, result in together.items():
        alone = evaluate_task(task, features, seed=seed, batched=False, **options)
        assert without_timings(result) == without_timings(alone)
    with pytest.raises(ValueError, match="distinct"):
        evaluate_seeds(task, features, seeds=[1, 1], **options)


def test_a_training_batch_of_one_row_is_a_clear_error():
    task = synthetic.scene_task()
    features = synthetic.scene_features(task, n=21)
    member = Member(conf={**BASE, "hidden_dim": 8, "batch_size": 10, "max_epochs": 1, "check_val_every_n_epoch": 1},
                    seed=0)
    train = (features["train"].x, features["train"].y)
    assert len(train[0]) % 10 == 1
    with pytest.raises(ValueError, match="batch of size 1"):
        train_probes([member], task, train, SplitScorer(task, features["valid"]), "cpu")


@pytest.mark.parametrize("smooth", [0.0, 0.9])
def test_event_scoring_of_many_members_equals_one_at_a_time(smooth):
    task = synthetic.event_task(evaluation=("event_onset_offset_50ms_20perc_fms", "segment_1s_er"))
    features = synthetic.event_features(task, n_files=5)
    valid = SplitScorer(task, features["valid"])
    rng = np.random.default_rng(0)
    truth = features["valid"].y
    probs = np.stack([np.clip(smooth * truth + (1 - smooth) * rng.random(truth.shape), 0, 1) for _ in range(4)])
    assert valid.primaries(probs.astype(np.float32)) == [valid.primary(p) for p in probs.astype(np.float32)]


@pytest.mark.parametrize("use_scoring", [True, False])
def test_jobs_on_different_splits_equal_the_sequential_path(use_scoring):
    """Fold rotations: each member its own training rows (equal count) and validation rows (unequal counts)."""
    task = dataclasses.replace(synthetic.scene_task(), use_scoring_for_early_stopping=use_scoring)
    features = synthetic.scene_features(task, n=90, noise=1.0, flip=0.2)
    splits = [features["train"], features["valid"], features["test"]]
    members = [m for m in mixed_members() if m.conf["hidden_layers"] == 1]
    jobs = []
    for k, member in enumerate(members):
        train = splits[k % 3]
        valid = dataclasses.replace(splits[(k + 1) % 3], x=splits[(k + 1) % 3].x[: 40 + 10 * k],
                                    y=splits[(k + 1) % 3].y[: 40 + 10 * k])
        jobs.append((member, (train.x, train.y), SplitScorer(task, valid)))
    batched = train_probes_on_splits(jobs, task, "cpu")
    for (member, train, valid), many in zip(jobs, batched):
        one = train_probe(member.conf, task, train, valid, "cpu", seed=member.seed)
        assert (many.epoch, many.validation_score) == (one.epoch, one.validation_score)
        assert all(torch.equal(one.state[k], many.state[k]) for k in one.state)
