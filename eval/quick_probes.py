"""Cheap views of an embedding (X-ARES style), NOT the heareval protocol: kNN and a single linear layer.

Both return a ``TaskResult`` whose ``protocol`` says which view it is ("knn-10-cosine", "linear"); report them
in their own columns, never mixed with heareval-protocol scores. No grid search: one fixed setting each.
Scoring, event post-processing (chosen on the validation split) and fold rotation are the heareval ones.
"""
from __future__ import annotations

import numpy as np
import torch

from eval.features import SplitFeatures
from eval.probe import (
    SplitScorer, TaskResult, aggregate_folds, concat_features, fold_features, score_test_split,
    split_arrangements, train_probe,
)

LINEAR_CONF = {
    "hidden_layers": 0, "hidden_dim": 0, "dropout": 0.0, "lr": 1e-2, "patience": 20, "max_epochs": 200,
    "check_val_every_n_epoch": 1, "batch_size": 1024, "initialization": "xavier_uniform",
}


def _knn_probabilities(train_x: np.ndarray, train_y: np.ndarray, x: np.ndarray, n_labels: int, k: int) -> np.ndarray:
    """Mean one/multi-hot label of the k most cosine-similar training rows. x: (n, dim) → (n, n_labels)."""
    def unit(a: np.ndarray) -> torch.Tensor:
        t = torch.as_tensor(a, dtype=torch.float32)
        return t / t.norm(dim=1, keepdim=True).clamp_min(1e-12)

    bank = unit(train_x)
    targets = torch.as_tensor(np.eye(n_labels, dtype=np.float32)[train_y] if train_y.ndim == 1 else train_y,
                              dtype=torch.float32)
    k = min(k, len(bank))
    out = [targets[(unit(chunk) @ bank.T).topk(k, dim=1).indices].mean(dim=1)
           for chunk in np.array_split(x, max(1, len(x) // 4096))]
    return torch.cat(out).numpy()


def knn_probe(task, features: dict[str, SplitFeatures], k: int = 10, progress: bool = True) -> TaskResult:
    """k-nearest-neighbour view: train rows vote; events post-processed with the grid point best on valid."""
    n_labels = len(task.label_vocab)
    fold_scores, details = {}, {}
    for arrangement in split_arrangements(task):
        train_x, train_y = concat_features(fold_features(features, arrangement["train"], task))
        valid = SplitScorer(task, fold_features(features, arrangement["valid"], task)[0])
        test = SplitScorer(task, fold_features(features, arrangement["test"], task)[0])
        valid_probs = _knn_probabilities(train_x, train_y, valid.features.x, n_labels, k)
        validation_score, postprocessing = valid.primary(valid_probs)
        test_probs = _knn_probabilities(train_x, train_y, test.features.x, n_labels, k)
        name = arrangement["test"][0]
        fold_scores[name] = test.all_scores(test_probs, postprocessing)
        details[name] = {"validation_score": validation_score,
                         "postprocessing": dict(postprocessing) if postprocessing else None}
    mean, std = aggregate_folds(task, fold_scores)
    first = next(iter(details.values()))
    return TaskResult(primary_metric=task.evaluation[0], fold_scores=fold_scores, mean=mean, std=std,
                      best_params={"k": k, "similarity": "cosine"}, validation_score=first["validation_score"],
                      protocol=f"knn-{k}-cosine", details=details)


def linear_probe(
    task, features: dict[str, SplitFeatures], device: str = "cpu", seed: int = 0, progress: bool = True
) -> TaskResult:
    """One linear layer (Adam lr 1e-2, ≤200 epochs, early stopping on validation), trained on every fold rotation."""
    fold_scores, details, first_validation = {}, {}, None
    for fold, arrangement in enumerate(split_arrangements(task)):
        train = concat_features(fold_features(features, arrangement["train"], task))
        valid = SplitScorer(task, fold_features(features, arrangement["valid"], task)[0])
        test = SplitScorer(task, fold_features(features, arrangement["test"], task)[0])
        fit = train_probe(LINEAR_CONF, task, train, valid, device, seed=seed * 100_003 + fold)
        name = arrangement["test"][0]
        fold_scores[name] = score_test_split(fit, LINEAR_CONF, task, test, device)
        details[name] = {"epoch": fit.epoch, "validation_score": fit.validation_score}
        first_validation = fit.validation_score if first_validation is None else first_validation
    mean, std = aggregate_folds(task, fold_scores)
    return TaskResult(primary_metric=task.evaluation[0], fold_scores=fold_scores, mean=mean, std=std,
                      best_params=dict(LINEAR_CONF), validation_score=first_validation, protocol="linear",
                      details=details)
