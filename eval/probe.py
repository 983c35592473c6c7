"""heareval 2021.1.3's downstream protocol: a small MLP on frozen embeddings, grid-searched, in plain torch.

Same model, losses, optimiser, grids and their order, batch order, validation schedule, early stopping and
checkpoint rules (Lightning 1.x: ties are no improvement, a non-finite score stops training, NaN is stored as
the worst score), event post-processing choice, fold rotation and aggregation as heareval; it is faster
because the data stay in one tensor, batches are slices, the grid points (and seeds) train as one batched model
(eval/probe_batched.py; ``train_probe`` here is the one-at-a-time reference) and event post-processing / scoring is
vectorised (results/heareval_speed.md; tests/eval/test_heareval_crosscheck.py compares with the real heareval).

Choices:
- Training batches come in the same order every epoch, as in heareval (its loader never shuffles training
  data); rows are used in the order of the given features (heareval's embedding stage shuffles files with a
  fixed seed first; with separable data the difference is noise). Each grid point / fold is seeded from
  ``seed``, so results do not depend on what ran before.
- For an error-rate primary metric the best event post-processing is the one with the LOWEST error; heareval
  takes the highest (it sorts every score descending). No HEAR task has an error rate as primary metric.
- ``std`` is the sample std over folds (pandas, as heareval); 0.0 for a single test split (heareval: absent).
"""
from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.model_selection import ParameterGrid
from tqdm.auto import tqdm

from eval.events import DEFAULT_POSTPROCESSING_GRID, FrameLayout, Postprocessing, frame_layout
from eval.events import frames_to_events, postprocessing_grid
from eval.features import SplitFeatures
from eval.score import event_score, maximize, scene_score

PARAM_GRIDS: dict[str, dict[str, list]] = {
    "default": {
        "hidden_layers": [1, 2], "hidden_dim": [1024], "dropout": [0.1], "lr": [3.2e-3, 1e-3, 3.2e-4, 1e-4],
        "patience": [20], "max_epochs": [500], "check_val_every_n_epoch": [3], "batch_size": [1024],
        "initialization": ["xavier_uniform", "xavier_normal"],
    },
}
PARAM_GRIDS["fast"] = {**PARAM_GRIDS["default"], "max_epochs": [10, 50], "check_val_every_n_epoch": [3, 10]}
PARAM_GRIDS["faster"] = {
    **PARAM_GRIDS["default"], "hidden_layers": [0, 1], "hidden_dim": [64, 128], "patience": [1, 3],
    "max_epochs": [10], "check_val_every_n_epoch": [1],
}
TASK_SPECIFIC_PARAM_GRID = {"dcase2016_task2": {"check_val_every_n_epoch": [10]}}  # as heareval: slow scoring
GRID_SHUFFLE_SEED = 42  # heareval shuffles the grid after seed_everything(42)
DEFAULT_GRID_POINTS = 8
INITIALIZATIONS = {"xavier_uniform": torch.nn.init.xavier_uniform_, "xavier_normal": torch.nn.init.xavier_normal_}


@dataclass
class TaskResult:
    """Scores of one task under one protocol. fold_scores: fold name (or "test") → {metric: score}."""

    primary_metric: str
    fold_scores: dict[str, dict[str, float]]
    mean: float  # primary metric averaged over folds
    std: float  # sample std (ddof=1) over folds as heareval/pandas; 0.0 for a single test split
    best_params: dict
    validation_score: float  # validation score of the selected grid point (first split arrangement)
    protocol: str = "heareval-mlp"
    details: dict = field(default_factory=dict)  # per fold: best epoch, validation score, post-processing,
    # training minutes (time_in_min) and test_loss, as heareval records them


def grid_points(grid: str, task, n_points: int = DEFAULT_GRID_POINTS) -> list[dict]:
    """The grid points heareval trains, in its order: ParameterGrid order, shuffled with seed 42, first n."""
    if grid not in PARAM_GRIDS:
        raise ValueError(f"unknown grid {grid!r}; choose one of {sorted(PARAM_GRIDS)}")
    final = dict(PARAM_GRIDS[grid])
    final.update(TASK_SPECIFIC_PARAM_GRID.get(task.name, {}))
    overrides = dict((task.evaluation_params or {}).get("task_specific_param_grid", {}))
    unknown = set(overrides) - set(final)
    if unknown:
        raise ValueError(f"task {task.name}: task_specific_param_grid has unknown keys {sorted(unknown)}")
    final.update(overrides)
    confs = list(ParameterGrid(final))
    random.Random(GRID_SHUFFLE_SEED).shuffle(confs)
    return confs[:n_points]


def split_arrangements(task) -> list[dict[str, list[str]]]:
    """Train/valid/test split names per arrangement; k-fold: test fold i, valid fold i+1, train the rest."""
    if task.split_mode == "trainvaltest":
        return [{"train": ["train"], "valid": ["valid"], "test": ["test"]}]
    folds = sorted(task.splits)
    arrangements = []
    for i, test in enumerate(folds):
        valid = folds[(i + 1) % len(folds)]
        arrangements.append({"train": [f for f in folds if f not in (test, valid)], "valid": [valid], "test": [test]})
    return arrangements


def build_mlp(n_features: int, n_labels: int, conf: dict) -> torch.nn.Sequential:
    """[Linear → BatchNorm1d → Dropout → ReLU] × hidden_layers, then Linear, with heareval's xavier gains."""
    init = INITIALIZATIONS[conf["initialization"]]
    layers: list[torch.nn.Module] = []
    width, gain = n_features, torch.nn.init.calculate_gain("linear")
    for _ in range(conf["hidden_layers"]):
        linear = torch.nn.Linear(width, conf["hidden_dim"])
        init(linear.weight, gain=gain)
        layers += [linear, torch.nn.BatchNorm1d(conf["hidden_dim"]), torch.nn.Dropout(conf["dropout"]), torch.nn.ReLU()]
        width, gain = conf["hidden_dim"], torch.nn.init.calculate_gain("relu")
    projection = torch.nn.Linear(width, n_labels)
    init(projection.weight, gain=gain)
    return torch.nn.Sequential(*layers, projection)


def concat_features(parts: list[SplitFeatures]) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of the parts stacked; a single part is returned as it is (no copy)."""
    if len(parts) == 1:
        return parts[0].x, parts[0].y
    return np.concatenate([p.x for p in parts]), np.concatenate([p.y for p in parts])


class SplitScorer:
    """Scores predictions of one split the heareval way; caches the event frame layout and references."""

    def __init__(self, task, features: SplitFeatures):
        self.task, self.features = task, features
        self.vocab = [str(label) for label in task.label_vocab]
        self.is_event = task.embedding_type == "event"
        if self.is_event:
            if features.events is None:
                raise ValueError(f"task {task.name} split {features.split}: event features need ground-truth events")
            self.layout: FrameLayout = frame_layout(features)
            self.reference = features.events
            grid = (task.evaluation_params or {}).get("event_postprocessing_grid", DEFAULT_POSTPROCESSING_GRID)
            self.postprocessings = postprocessing_grid(grid)
        else:
            n_labels = len(self.vocab)
            y = features.y
            self.targets = np.eye(n_labels, dtype=np.float32)[y] if y.ndim == 1 else y.astype(np.float32)

    def events(self, probs: np.ndarray, postprocessings: list[Postprocessing]):
        return frames_to_events(probs, self.layout, self.vocab, postprocessings)

    def primary(self, probs: np.ndarray) -> tuple[float, Postprocessing | None]:
        """Primary score and, for events, the post-processing that gave it (chosen on this split)."""
        metric = self.task.evaluation[0]
        if not self.is_event:
            return scene_score(metric, probs, self.targets)[metric], None
        return self._best_postprocessing(self.events(probs, self.postprocessings))

    def primaries(self, probs: np.ndarray) -> list[tuple[float, Postprocessing | None]]:
        """``primary`` of each member's probabilities (M, n, n_labels); the event post-processing of all members
        and candidates runs as one (member, label) column block (each column is filtered on its own)."""
        if not self.is_event:
            return [self.primary(member_probs) for member_probs in probs]
        members, rows, n_labels = probs.shape
        columns = np.ascontiguousarray(probs.transpose(1, 0, 2)).reshape(rows, members * n_labels)
        by_pp = frames_to_events(columns, self.layout, [str(c) for c in range(members * n_labels)],
                                 self.postprocessings)
        results = []
        for member in range(members):
            member_events = {
                pp: {name: [{**e, "label": self.vocab[int(e["label"]) % n_labels]} for e in file_events
                            if int(e["label"]) // n_labels == member] for name, file_events in events.items()}
                for pp, events in by_pp.items()
            }
            results.append(self._best_postprocessing(member_events))
        return results

    def _best_postprocessing(self, events_by_pp: dict) -> tuple[float, Postprocessing]:
        """(primary score, post-processing) of the best candidate; NaN counts as 0 and ties go to the larger
        candidate, as heareval sorts them."""
        metric = self.task.evaluation[0]
        sign = 1.0 if maximize(metric) else -1.0
        ranked = []
        for pp, events in events_by_pp.items():
            value = event_score(metric, events, self.reference, self.vocab)[metric]
            ranked.append((0.0 if math.isnan(value) else sign * value, pp, value))  # NaN counts as 0, as heareval
        ranked.sort(key=lambda item: (item[0], item[1]), reverse=True)
        return ranked[0][2], ranked[0][1]

    def all_scores(self, probs: np.ndarray, postprocessing: Postprocessing | None) -> dict[str, float]:
        scores: dict[str, float] = {}
        if not self.is_event:
            for metric in self.task.evaluation:
                scores.update(scene_score(metric, probs, self.targets))
            return scores
        events = self.events(probs, [postprocessing])[postprocessing]
        for metric in self.task.evaluation:
            scores.update(event_score(metric, events, self.reference, self.vocab))
        return scores


@dataclass
class FittedProbe:
    state: dict  # best checkpoint's state_dict
    epoch: int
    validation_score: float
    postprocessing: Postprocessing | None


@dataclass
class CheckpointTracker:
    """Early stopping (min_delta 0, check_finite) then best checkpoint (save_top_k 1, NaN stored as the worst
    value), as Lightning 1.x applies them after each validation."""

    patience: int
    larger_is_better: bool
    stop_best: float = math.nan
    wait: int = 0
    best: FittedProbe | None = None

    def __post_init__(self):
        self.stop_best = -math.inf if self.larger_is_better else math.inf

    def better(self, a: float, b: float) -> bool:
        return a > b if self.larger_is_better else a < b

    def update(self, value: float, epoch: int, postprocessing, state_of) -> bool:
        """Record one validation (``state_of()`` gives the weights, called only for a new best); returns whether
        training stops."""
        stop = not math.isfinite(value)
        if not stop and self.better(value, self.stop_best):
            self.stop_best, self.wait = value, 0
        elif not stop:
            self.wait += 1
            stop = self.wait >= self.patience
        if self.best is None or self.better(value, self.best.validation_score):
            stored = (-math.inf if self.larger_is_better else math.inf) if math.isnan(value) else value
            self.best = FittedProbe(state=state_of(), epoch=epoch, validation_score=stored,
                                    postprocessing=postprocessing)
        return stop


def predict_probabilities(
    model: torch.nn.Module, x: torch.Tensor, multiclass: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, probabilities) in eval mode, in chunks. x: (n, dim) → (n, n_labels) each."""
    model.eval()
    with torch.no_grad():
        logits = torch.cat([model(chunk) for chunk in torch.split(x, 16384)])
    return logits, (torch.softmax(logits, dim=1) if multiclass else torch.sigmoid(logits))


def _loss_fn(multiclass: bool):
    return torch.nn.CrossEntropyLoss() if multiclass else torch.nn.BCEWithLogitsLoss()


def train_probe(
    conf: dict, task, train: tuple[np.ndarray, np.ndarray], valid: SplitScorer, device: str, seed: int
) -> FittedProbe:
    """Train one grid point; keep the checkpoint with the best monitored validation value (Lightning rules)."""
    torch.manual_seed(seed)
    multiclass = task.prediction_type == "multiclass"
    x = torch.as_tensor(train[0], dtype=torch.float32, device=device)
    y = torch.as_tensor(train[1], device=device)
    x_valid = torch.as_tensor(valid.features.x, dtype=torch.float32, device=device)
    y_valid = torch.as_tensor(valid.features.y, device=device)
    model = build_mlp(x.shape[1], len(task.label_vocab), conf).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=conf["lr"])
    loss_fn = _loss_fn(multiclass)
    use_scoring = task.use_scoring_for_early_stopping
    tracker = CheckpointTracker(patience=conf["patience"],
                                larger_is_better=maximize(task.evaluation[0]) if use_scoring else False)
    for epoch in range(conf["max_epochs"]):
        model.train()
        for start in range(0, len(x), conf["batch_size"]):  # same order every epoch, as heareval
            loss = loss_fn(model(x[start : start + conf["batch_size"]]), y[start : start + conf["batch_size"]])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        if (epoch + 1) % conf["check_val_every_n_epoch"]:
            continue
        logits, probs = predict_probabilities(model, x_valid, multiclass)
        postprocessing = None
        if use_scoring:
            value, postprocessing = valid.primary(probs.cpu().numpy())
        else:
            value = float(loss_fn(logits, y_valid))
        if tracker.update(value, epoch, postprocessing, state_of=lambda: copy.deepcopy(model.state_dict())):
            break
    best = tracker.best
    if best is None:
        raise ValueError(f"grid point {conf} never validated: max_epochs < check_val_every_n_epoch")
    return best


def test_postprocessing(fit: FittedProbe, task, test: SplitScorer) -> Postprocessing | None:
    """The event post-processing used on the test split: the best validation epoch's choice, or the task's
    single setting when early stopping monitors the validation loss."""
    if not test.is_event or task.use_scoring_for_early_stopping:
        return fit.postprocessing
    if len(test.postprocessings) != 1:
        raise ValueError(f"task {task.name}: without scoring-based early stopping the post-processing grid "
                         f"must have exactly one point, got {len(test.postprocessings)}")
    return test.postprocessings[0]


def score_test_split(fit: FittedProbe, conf: dict, task, test: SplitScorer, device: str) -> dict[str, float]:
    """All of the task's metrics on the test split, from the fit's best checkpoint."""
    model = build_mlp(test.features.x.shape[1], len(task.label_vocab), conf).to(device)
    model.load_state_dict(fit.state)
    x = torch.as_tensor(test.features.x, dtype=torch.float32, device=device)
    _, probs = predict_probabilities(model, x, task.prediction_type == "multiclass")
    return test.all_scores(probs.cpu().numpy(), test_postprocessing(fit, task, test))


def loss_on_split(fit: FittedProbe, conf: dict, task, test: SplitScorer, device: str) -> float:
    """Mean loss of the fit's best checkpoint over the whole test split, as heareval logs ``test_loss``."""
    model = build_mlp(test.features.x.shape[1], len(task.label_vocab), conf).to(device)
    model.load_state_dict(fit.state)
    multiclass = task.prediction_type == "multiclass"
    logits, _ = predict_probabilities(model, torch.as_tensor(test.features.x, dtype=torch.float32, device=device),
                                      multiclass)
    return float(_loss_fn(multiclass)(logits, torch.as_tensor(test.features.y, device=device)))


def fold_features(features: dict[str, SplitFeatures], names: list[str], task) -> list[SplitFeatures]:
    missing = [n for n in names if n not in features]
    if missing:
        raise ValueError(f"task {task.name}: no features for split(s) {missing}; have {sorted(features)}")
    return [features[n] for n in names]


def aggregate_folds(task, fold_scores: dict[str, dict[str, float]]) -> tuple[float, float]:
    values = np.array([scores[task.evaluation[0]] for scores in fold_scores.values()], dtype=np.float64)
    std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
    return float(np.mean(values)), std


def evaluate_task(
    task,
    features: dict[str, SplitFeatures],
    grid: str = "default",
    device: str = "cpu",
    seed: int = 0,
    progress: bool = True,
    n_grid_points: int = DEFAULT_GRID_POINTS,
    num_threads: int | None = 1,
    batched: bool = True,
) -> TaskResult:
    """heareval's protocol: grid search on the first arrangement, winner retrained and tested on every fold.

    num_threads: torch CPU threads while probing (None leaves torch's setting). One thread is the default
    because these small MLPs ran 7-15x slower with 2 threads than with 1 on a busy 2-core machine.
    batched: train the grid points together (eval.probe_batched; same results as one after the other).
    """
    return evaluate_seeds(task, features, seeds=[seed], grid=grid, device=device, progress=progress,
                          n_grid_points=n_grid_points, num_threads=num_threads, batched=batched)[seed]


def evaluate_seeds(
    task,
    features: dict[str, SplitFeatures],
    seeds: list[int],
    grid: str = "default",
    device: str = "cpu",
    progress: bool = True,
    n_grid_points: int = DEFAULT_GRID_POINTS,
    num_threads: int | None = 1,
    batched: bool = True,
) -> dict[int, TaskResult]:
    """``evaluate_task`` for every seed, the seeds' probes trained in the same batched model: seed → result."""
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and at least one, got {seeds}")
    previous = torch.get_num_threads()
    if num_threads is not None and device == "cpu":
        torch.set_num_threads(num_threads)
    try:
        return _evaluate(task, features, grid, device, list(seeds), progress, n_grid_points, batched)
    finally:
        torch.set_num_threads(previous)


def _train_jobs(jobs: list[tuple], task, device: str, batched: bool) -> list[FittedProbe]:
    """Fits of (Member, train, valid) jobs: batched (eval.probe_batched) or one after the other (the reference)."""
    from eval.probe_batched import train_probes_on_splits  # imports this module: imported when first used

    if batched:
        return train_probes_on_splits(jobs, task, device)
    return [train_probe(member.conf, task, train, valid, device, seed=member.seed) for member, train, valid in jobs]


def _evaluate(task, features, grid, device, seeds, progress, n_grid_points, batched) -> dict[int, TaskResult]:
    from eval.probe_batched import Member

    arrangements = split_arrangements(task)
    confs = grid_points(grid, task, n_grid_points)
    first = arrangements[0]
    train = concat_features(fold_features(features, first["train"], task))
    valid = SplitScorer(task, fold_features(features, first["valid"], task)[0])
    members = [Member(conf=conf, seed=seed * 100_003 + index) for seed in seeds for index, conf in enumerate(confs)]
    desc = f"{task.name} grid" + (" and folds" if len(arrangements) > 1 else "")
    with tqdm(total=len(arrangements), desc=desc, disable=not progress) as bar:
        start = time.perf_counter()
        grid_fits = _train_jobs([(member, train, valid) for member in members], task, device, batched)
        grid_minutes = (time.perf_counter() - start) / 60
        bar.update()
        larger_is_better = maximize(task.evaluation[0]) if task.use_scoring_for_early_stopping else False
        best: dict[int, tuple[FittedProbe, int]] = {}
        for s, seed in enumerate(seeds):
            candidates = [(fit, index) for index, fit in enumerate(grid_fits[s * len(confs) : (s + 1) * len(confs)])]
            candidates.sort(key=lambda item: item[0].validation_score, reverse=larger_is_better)  # stable, as heareval
            best[seed] = candidates[0]
        fits = {seed: [best[seed][0]] for seed in seeds}
        jobs, job_seeds = [], []  # every later fold rotation of every seed: the winner retrained, batched
        for fold, arrangement in enumerate(arrangements[1:], 1):
            fold_train = concat_features(fold_features(features, arrangement["train"], task))
            fold_valid = SplitScorer(task, fold_features(features, arrangement["valid"], task)[0])
            for seed in seeds:
                member = Member(conf=confs[best[seed][1]], seed=seed * 100_003 + 1000 * fold + best[seed][1])
                jobs.append((member, fold_train, fold_valid))
                job_seeds.append(seed)
        start = time.perf_counter()
        for seed, fit in zip(job_seeds, _train_jobs(jobs, task, device, batched)):  # in fold order per seed
            fits[seed].append(fit)
        fold_minutes = (time.perf_counter() - start) / 60
        # heareval's time_in_min: the wall time of the (batched) training that produced each fold's fit
        minutes = [grid_minutes] + [fold_minutes] * (len(arrangements) - 1)
        bar.update(len(arrangements) - 1)
    tests = {arrangement["test"][0]: SplitScorer(task, fold_features(features, arrangement["test"], task)[0])
             for arrangement in arrangements}
    return {seed: _score_seed(task, confs[best[seed][1]], fits[seed], minutes, arrangements, tests, grid, device)
            for seed in seeds}


def _score_seed(task, conf, fits, minutes, arrangements, tests, grid, device) -> TaskResult:
    """One seed's TaskResult: each fold's fit scored on its test split."""
    fold_scores, details = {}, {}
    for fit, fit_minutes, arrangement in zip(fits, minutes, arrangements):
        name = arrangement["test"][0]
        fold_scores[name] = score_test_split(fit, conf, task, tests[name], device)
        used = test_postprocessing(fit, task, tests[name])
        details[name] = {"epoch": fit.epoch, "validation_score": fit.validation_score,
                         "postprocessing": dict(used) if used else None, "time_in_min": fit_minutes,
                         "test_loss": loss_on_split(fit, conf, task, tests[name], device)}
    mean, std = aggregate_folds(task, fold_scores)
    return TaskResult(
        primary_metric=task.evaluation[0], fold_scores=fold_scores, mean=mean, std=std,
        best_params={**copy.deepcopy(conf), "grid": grid}, validation_score=fits[0].validation_score,
        details=details,
    )
