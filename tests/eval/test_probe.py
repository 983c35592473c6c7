"""The heareval MLP protocol: grids, model, fold rotation, determinism, and scores on tasks with known answers."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from eval import synthetic
from eval.probe import PARAM_GRIDS, build_mlp, evaluate_task, grid_points, split_arrangements, train_probe
from eval.quick_probes import knn_probe, linear_probe


@pytest.mark.parametrize("grid, total", [("default", 16), ("fast", 64), ("faster", 64)])
def test_grid_sizes(grid, total):
    task = synthetic.scene_task()
    assert len(grid_points(grid, task, n_points=1000)) == total
    chosen = grid_points(grid, task)
    assert len(chosen) == 8 and chosen == grid_points(grid, task, n_points=1000)[:8]
    assert len({tuple(sorted(c.items())) for c in chosen}) == 8


def test_task_specific_grid_overrides():
    task = dataclasses.replace(synthetic.scene_task(), name="dcase2016_task2")
    assert {c["check_val_every_n_epoch"] for c in grid_points("default", task)} == {10}
    params = {"task_specific_param_grid": {"max_epochs": [7]}}
    task = dataclasses.replace(synthetic.scene_task(), evaluation_params=params)
    assert {c["max_epochs"] for c in grid_points("fast", task)} == {7}
    with pytest.raises(ValueError, match="unknown keys"):
        grid_points("default", dataclasses.replace(task, evaluation_params={"task_specific_param_grid": {"lr2": [1]}}))
    with pytest.raises(ValueError, match="unknown grid"):
        grid_points("fastest", task)


@pytest.mark.parametrize("hidden_layers", [0, 1, 2])
@pytest.mark.parametrize("initialization", ["xavier_uniform", "xavier_normal"])
def test_mlp_layout_and_init(hidden_layers, initialization):
    conf = {**{k: v[0] for k, v in PARAM_GRIDS["default"].items()}, "hidden_layers": hidden_layers,
            "initialization": initialization}
    torch.manual_seed(0)
    model = build_mlp(300, 5, conf)
    kinds = [type(m).__name__ for m in model]
    assert kinds == ["Linear", "BatchNorm1d", "Dropout", "ReLU"] * hidden_layers + ["Linear"]
    first = model[0].weight
    gain = 1.0  # the first layer follows an unknown ("linear") activation
    std = gain * math.sqrt(2.0 / (first.shape[0] + first.shape[1]))
    assert first.std().item() == pytest.approx(std, rel=0.1)
    if hidden_layers:  # later layers follow a ReLU: gain sqrt(2)
        last = model[-1].weight
        assert last.std().item() == pytest.approx(math.sqrt(2) * math.sqrt(2.0 / sum(last.shape)), rel=0.15)


def test_fold_rotation():
    task = dataclasses.replace(synthetic.scene_task(kfold=True), splits=("fold02", "fold00", "fold03", "fold01"))
    arrangements = split_arrangements(task)
    assert [(a["test"], a["valid"]) for a in arrangements] == [
        (["fold00"], ["fold01"]), (["fold01"], ["fold02"]), (["fold02"], ["fold03"]), (["fold03"], ["fold00"])]
    assert arrangements[3]["train"] == ["fold01", "fold02"]
    assert split_arrangements(synthetic.scene_task()) == [{"train": ["train"], "valid": ["valid"], "test": ["test"]}]


def quick(task, features, **kwargs):
    return evaluate_task(task, features, grid="fast", n_grid_points=2, progress=False, **kwargs)


def test_scene_probe_finds_the_known_accuracy_and_is_deterministic():
    task = synthetic.scene_task()
    features = synthetic.scene_features(task, flip=0.2)
    first, again = quick(task, features, seed=3), quick(task, features, seed=3)
    assert first.fold_scores["test"]["top1_acc"] == pytest.approx(0.8)  # 20 % of test labels are wrong
    assert first.fold_scores == again.fold_scores and first.best_params == again.best_params
    assert first.mean == first.fold_scores["test"]["top1_acc"] and first.std == 0.0


def test_kfold_aggregates_mean_and_sample_std():
    task = synthetic.scene_task(kfold=True)
    result = quick(task, synthetic.scene_features(task, flip=0.2))
    accuracies = [result.fold_scores[f]["top1_acc"] for f in ("fold00", "fold01", "fold02")]
    assert accuracies == pytest.approx([0.8, 1.0, 1.0])  # only fold00 has flipped labels
    assert result.mean == pytest.approx(np.mean(accuracies)) and result.std == pytest.approx(np.std(accuracies, ddof=1))


@pytest.mark.parametrize("use_scoring", [True, False])
def test_event_probe(use_scoring):
    params = {} if use_scoring else {"event_postprocessing_grid": {"median_filter_ms": [150], "min_duration": [50]}}
    task = synthetic.event_task(use_scoring_for_early_stopping=use_scoring, evaluation_params=params)
    result = quick(task, synthetic.event_features(task, n_files=6))
    scores = result.fold_scores["test"]
    assert scores["event_onset_200ms_fms"] > 0.9 and scores["segment_1s_er"] < 0.2
    chosen = result.details["test"]["postprocessing"]
    if use_scoring:  # chosen on validation from the default grid
        assert chosen["median_filter_ms"] == 250 and chosen["min_duration"] in (125, 250)
    else:  # the task's single setting; the monitored value is the validation loss
        assert chosen == {"median_filter_ms": 150, "min_duration": 50} and 0 < result.validation_score < 1


def test_missing_split_is_a_clear_error():
    task = synthetic.scene_task()
    features = synthetic.scene_features(task)
    del features["valid"]
    with pytest.raises(ValueError, match="valid"):
        quick(task, features)


@pytest.mark.parametrize("probe", [knn_probe, linear_probe])
def test_cheap_views_are_labelled_and_score(probe):
    task = synthetic.scene_task()
    result = probe(task, synthetic.scene_features(task, flip=0.2), progress=False)
    assert result.protocol != "heareval-mlp"
    assert result.fold_scores["test"]["top1_acc"] == pytest.approx(0.8, abs=0.05)  # 20 % flipped


class ScriptedScorer:
    """Stands in for a validation split: returns a scripted primary score at each validation."""

    def __init__(self, features, values):
        self.features, self.values, self.calls = features, list(values), 0

    def primary(self, probs):
        self.calls += 1
        return self.values[self.calls - 1], None


@pytest.mark.parametrize(
    "values, patience, expected_calls, best_epoch, best_score",
    [
        ([0.5, 0.7, 0.7, 0.6, 0.9], 2, 4, 1, 0.7),  # a tie is no improvement; the first 0.7 is kept
        ([0.5, 0.6, 0.7, 0.8, 0.9], 2, 5, 4, 0.9),  # runs to max_epochs
        ([math.nan, 0.9], 5, 1, 0, -math.inf),  # NaN stops training; Lightning stores it as the worst value
        ([0.5, math.nan, 0.9], 5, 2, 0, 0.5),
        ([0.5, math.inf, 0.9], 5, 2, 1, math.inf),  # d_prime = inf (AUC 1) stops but is the best checkpoint
    ],
)
def test_early_stopping_and_checkpoint_follow_lightning(values, patience, expected_calls, best_epoch, best_score):
    task = synthetic.scene_task()
    features = synthetic.scene_features(task, n=12)
    conf = {**{k: v[0] for k, v in PARAM_GRIDS["faster"].items()}, "max_epochs": 5, "patience": patience}
    scorer = ScriptedScorer(features["valid"], values)
    fit = train_probe(conf, task, (features["train"].x, features["train"].y), scorer, device="cpu", seed=0)
    assert scorer.calls == expected_calls
    assert (fit.epoch, fit.validation_score) == (best_epoch, best_score)
