"""Many probes trained as one batched model: grid points (and seeds) of a task share every training step.

``train_probes(members, ...)`` returns, member by member, what ``eval.probe.train_probe(conf, ..., seed)``
returns for that member: the same initial weights (each member is built by ``build_mlp`` under its own seed),
the same dropout masks (each member draws them from its own generator, continuing its seed's stream after the
init, in the order the sequential model draws them), the same batches in the same order, Adam with the member's
learning rate, BatchNorm statistics per member, and the sequential early-stopping and checkpoint rules applied
per member. Weights are stacked along a leading member dimension and every layer is one batched matmul
(baddbmm), BatchNorm one call with (member, feature) pairs as channels; the losses and the Adam step size are
computed per member as torch computes them, so on CPU every member's weights equal the sequential ones bit for
bit (tests/test_probe_batched.py; a fused mean over members or a tensor step size would round differently, and
the Linear bias before a BatchNorm, whose true gradient is 0, would then drift on rounding noise). Members that
stop leave the batch. On CUDA the dropout masks differ from the sequential ones (its fused dropout draws
differently); the semantics are the same.

Members can share a batch when their layer shapes and batch size agree (``group_key``); ``train_probes``
groups them itself.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from eval.probe import FittedProbe, SplitScorer, build_mlp
from eval.score import maximize

ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8  # torch.optim.Adam's defaults, as heareval
BATCHNORM_EPS, BATCHNORM_MOMENTUM = 1e-5, 0.1  # torch.nn.BatchNorm1d's defaults
PREDICT_CHUNK = 16384


@dataclass(frozen=True)
class Member:
    """One probe to train: a grid point and the seed ``train_probe`` would be given."""

    conf: dict
    seed: int


def group_key(conf: dict) -> tuple[int, int, int]:
    """Members with equal (hidden_layers, hidden_dim, batch_size) train in one batch."""
    return conf["hidden_layers"], conf["hidden_dim"] if conf["hidden_layers"] else 0, conf["batch_size"]


def _stack_members(
    members: list[Member], n_features: int, n_labels: int
) -> tuple[dict[str, torch.Tensor], list[torch.Generator]]:
    """Initial weights of every member, stacked: per Sequential key a (n_members, ...) tensor, and per member a
    generator holding its RNG stream right after the init (where the sequential model's dropout continues)."""
    states, generators = [], []
    for member in members:
        torch.manual_seed(member.seed)
        states.append(build_mlp(n_features, n_labels, member.conf).state_dict())
        generator = torch.Generator()
        generator.set_state(torch.get_rng_state())
        generators.append(generator)
    stacked = {key: torch.stack([state[key] for state in states]) for key in states[0]}
    return stacked, generators


class StackedMLP:
    """``build_mlp``'s model for n_members members at once. Linear weights (M, out, in), biases (M, 1, out);
    BatchNorm affine (M, 1, H) and running statistics (M, H)."""

    def __init__(self, state: dict[str, torch.Tensor], hidden_layers: int, device: str):
        self.hidden_layers = hidden_layers
        self.linear = [4 * i for i in range(hidden_layers + 1)]  # Sequential indices of the Linear layers
        self.parameters: dict[str, torch.Tensor] = {}
        self.buffers: dict[str, torch.Tensor] = {}
        self.member_shapes = {key: value.shape[1:] for key, value in state.items()}
        for key, value in state.items():
            index, name = key.split(".")
            value = value.to(device)
            if name in ("running_mean", "running_var", "num_batches_tracked"):
                self.buffers[key] = value.clone()
            else:  # biases and BatchNorm affine get a broadcast dimension for the rows
                shaped = value.unsqueeze(1) if value.dim() == 2 else value
                self.parameters[key] = shaped.clone().requires_grad_(True)

    def keep(self, index: torch.Tensor) -> None:
        """Drop every member not in ``index`` (M',) from the batch."""
        for key, value in self.parameters.items():
            self.parameters[key] = value.detach()[index].requires_grad_(True)
        for key, value in self.buffers.items():
            self.buffers[key] = value[index]

    def member_state(self, member: int) -> dict[str, torch.Tensor]:
        """The member's weights as ``build_mlp``'s state_dict."""
        tensors = {**self.parameters, **self.buffers}
        return {key: tensors[key][member].detach().reshape(shape).clone() for key, shape in self.member_shapes.items()}

    def forward(self, x: torch.Tensor, masks: list[torch.Tensor] | None) -> torch.Tensor:
        """x: (B, D) shared by all members → logits (M, B, n_labels).

        masks: per hidden layer a (M, B, H) dropout multiplier (training), or None (eval mode). Every op gives
        each member bit for bit what the sequential model's op gives (baddbmm = addmm per member; BatchNorm
        with members × features as channels = BatchNorm1d per member)."""
        members = self.parameters["0.weight"].shape[0]
        h = x.expand(members, *x.shape)
        for layer, index in enumerate(self.linear):
            weight, bias = self.parameters[f"{index}.weight"], self.parameters[f"{index}.bias"]
            h = torch.baddbmm(bias, h, weight.transpose(1, 2))
            if layer == self.hidden_layers:
                return h
            h = self._batch_norm(h, index + 1, training=masks is not None)
            if masks is not None:
                h = h * masks[layer]
            h = torch.relu(h)
        raise AssertionError("unreachable")

    def _batch_norm(self, h: torch.Tensor, index: int, training: bool) -> torch.Tensor:
        """torch's batch_norm over rows with (member, feature) pairs as channels. h: (M, B, H) → (M, B, H)."""
        members, rows, width = h.shape
        if training and rows < 2:
            raise ValueError("BatchNorm1d needs more than 1 row per training batch; a training batch of size 1 "
                             "is left over (change the batch size or drop one training row)")
        flat = h.transpose(0, 1).reshape(rows, members * width)
        out = F.batch_norm(
            flat, self.buffers[f"{index}.running_mean"].view(-1), self.buffers[f"{index}.running_var"].view(-1),
            weight=self.parameters[f"{index}.weight"].reshape(-1), bias=self.parameters[f"{index}.bias"].reshape(-1),
            training=training, momentum=BATCHNORM_MOMENTUM, eps=BATCHNORM_EPS,
        )
        if training:
            self.buffers[f"{index}.num_batches_tracked"] += 1
        return out.view(rows, members, width).transpose(0, 1)


class StackedAdam:
    """torch.optim.Adam (defaults, single-tensor CPU algorithm) with one learning rate per member."""

    def __init__(self, model: StackedMLP, lrs: list[float]):
        self.model, self.lrs, self.step_count = model, lrs, 0
        self.exp_avg = {k: torch.zeros_like(v) for k, v in model.parameters.items()}
        self.exp_avg_sq = {k: torch.zeros_like(v) for k, v in model.parameters.items()}

    def keep(self, index: torch.Tensor) -> None:
        self.lrs = [self.lrs[i] for i in index.tolist()]
        for state in (self.exp_avg, self.exp_avg_sq):
            for key in state:
                state[key] = state[key][index]

    @torch.no_grad()
    def step(self) -> None:
        self.step_count += 1
        beta1, beta2 = ADAM_BETAS
        bias_correction1 = 1 - beta1 ** self.step_count
        bias_correction2_sqrt = (1 - beta2 ** self.step_count) ** 0.5
        for key, param in self.model.parameters.items():
            grad = param.grad
            self.exp_avg[key].lerp_(grad, 1 - beta1)
            self.exp_avg_sq[key].mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            denom = (self.exp_avg_sq[key].sqrt() / bias_correction2_sqrt).add_(ADAM_EPS)
            for member, lr in enumerate(self.lrs):  # the step size is a Python float per member, as in torch
                param[member].addcdiv_(self.exp_avg[key][member], denom[member], value=-(lr / bias_correction1))
            param.grad = None


@dataclass
class _Tracker:
    """One member's early stopping and best checkpoint (Lightning rules, as eval.probe.train_probe)."""

    conf: dict
    larger_is_better: bool
    stop_best: float = math.nan
    wait: int = 0
    best: FittedProbe | None = None

    def __post_init__(self):
        self.stop_best = -math.inf if self.larger_is_better else math.inf

    def better(self, a: float, b: float) -> bool:
        return a > b if self.larger_is_better else a < b

    def update(self, value: float, epoch: int, postprocessing, state_of) -> bool:
        """Record one validation; returns whether training stops."""
        stop = not math.isfinite(value)
        if not stop and self.better(value, self.stop_best):
            self.stop_best, self.wait = value, 0
        elif not stop:
            self.wait += 1
            stop = self.wait >= self.conf["patience"]
        if self.best is None or self.better(value, self.best.validation_score):
            stored = (-math.inf if self.larger_is_better else math.inf) if math.isnan(value) else value
            self.best = FittedProbe(state=state_of(), epoch=epoch, validation_score=stored,
                                    postprocessing=postprocessing)
        return stop


def _losses(logits: torch.Tensor, y: torch.Tensor, multiclass: bool) -> torch.Tensor:
    """Each member's mean loss (M,) from logits (M, B, C): the sequential loss function called once per member,
    so that its gradients are the sequential ones bit for bit (a fused mean over members rounds differently)."""
    loss_fn = F.cross_entropy if multiclass else F.binary_cross_entropy_with_logits
    return torch.stack([loss_fn(member_logits, y if multiclass else y.to(logits.dtype)) for member_logits in logits])


def _predict(model: StackedMLP, x: torch.Tensor, multiclass: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, probabilities), each (M, n, n_labels), in eval mode."""
    with torch.no_grad():
        logits = torch.cat([model.forward(chunk, masks=None) for chunk in torch.split(x, PREDICT_CHUNK)], dim=1)
    return logits, (torch.softmax(logits, dim=2) if multiclass else torch.sigmoid(logits))


def _dropout_masks(members: list[int], confs: list[dict], generators: list, rows: int, width: int,
                   hidden_layers: int, device: str) -> list[torch.Tensor]:
    """Per hidden layer a (M, rows, width) multiplier: each member's Bernoulli(1 - p) / (1 - p), drawn from its
    own generator layer after layer, exactly as torch.nn.functional.dropout draws on CPU (no draw when p is 0)."""
    masks = [torch.empty(len(members), rows, width) for _ in range(hidden_layers)]
    for i, m in enumerate(members):
        p = confs[m]["dropout"]
        for mask in masks:
            if p == 0:
                mask[i].fill_(1.0)
            elif p == 1:
                mask[i].zero_()
            else:
                mask[i].bernoulli_(1 - p, generator=generators[m]).div_(1 - p)
    return [mask.to(device) for mask in masks]


def _train_group(members: list[Member], task, train, valid: SplitScorer, device: str) -> list[FittedProbe]:
    """Train members of one group_key together; FittedProbes in the members' order."""
    confs = [member.conf for member in members]
    hidden_layers, hidden_dim, batch_size = group_key(confs[0])
    multiclass = task.prediction_type == "multiclass"
    x = torch.as_tensor(train[0], dtype=torch.float32, device=device)
    y = torch.as_tensor(train[1], device=device)
    x_valid = torch.as_tensor(valid.features.x, dtype=torch.float32, device=device)
    y_valid = torch.as_tensor(valid.features.y, device=device)
    state, generators = _stack_members(members, x.shape[1], len(task.label_vocab))
    model = StackedMLP(state, hidden_layers, device)
    optimizer = StackedAdam(model, [c["lr"] for c in confs])
    use_scoring = task.use_scoring_for_early_stopping
    larger_is_better = maximize(task.evaluation[0]) if use_scoring else False
    trackers = [_Tracker(conf=c, larger_is_better=larger_is_better) for c in confs]
    active = list(range(len(members)))  # member indices still training, in the order of the batch dimension
    for epoch in range(max(c["max_epochs"] for c in confs)):
        for start in range(0, len(x), batch_size):  # same order every epoch, as heareval
            x_batch, y_batch = x[start : start + batch_size], y[start : start + batch_size]
            masks = _dropout_masks(active, confs, generators, len(x_batch), hidden_dim, hidden_layers, device)
            _losses(model.forward(x_batch, masks), y_batch, multiclass).sum().backward()
            optimizer.step()
        validating = [i for i, m in enumerate(active) if (epoch + 1) % confs[m]["check_val_every_n_epoch"] == 0]
        finished = set()
        if validating:
            logits, probs = _predict(model, x_valid, multiclass)
            if use_scoring:  # every validating member's post-processing and scoring at once
                chosen = valid.primaries(probs[validating].cpu().numpy())
            else:
                chosen = [(float(loss), None) for loss in _losses(logits[validating], y_valid, multiclass)]
            for i, (value, postprocessing) in zip(validating, chosen):
                if trackers[active[i]].update(value, epoch, postprocessing, lambda i=i: model.member_state(i)):
                    finished.add(active[i])
        finished |= {m for m in active if epoch + 1 >= confs[m]["max_epochs"]}
        if finished:
            remaining = [i for i, m in enumerate(active) if m not in finished]
            active = [active[i] for i in remaining]
            if not active:
                break
            index = torch.tensor(remaining, device=device)
            model.keep(index)
            optimizer.keep(index)
    for member, tracker in zip(members, trackers):
        if tracker.best is None:
            raise ValueError(f"grid point {member.conf} never validated: max_epochs < check_val_every_n_epoch")
    return [tracker.best for tracker in trackers]


def train_probes(
    members: list[Member], task, train: tuple[np.ndarray, np.ndarray], valid: SplitScorer, device: str
) -> list[FittedProbe]:
    """``[train_probe(m.conf, task, train, valid, device, seed=m.seed) for m in members]``, batched by group_key."""
    groups: dict[tuple, list[int]] = {}
    for index, member in enumerate(members):
        groups.setdefault(group_key(member.conf), []).append(index)
    fits: list[FittedProbe | None] = [None] * len(members)
    for indices in groups.values():
        for index, fit in zip(indices, _train_group([members[i] for i in indices], task, train, valid, device)):
            fits[index] = fit
    return fits
