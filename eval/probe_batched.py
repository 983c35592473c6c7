"""Many probes trained as one batched model: grid points (and seeds) of a task share every training step.

``train_probes(members, ...)`` returns, member by member, what ``eval.probe.train_probe(conf, ..., seed)``
returns for that member: the same initial weights (each member is built by ``build_mlp`` under its own seed),
the same dropout masks (each member draws them from its own generator, continuing its seed's stream after the
init, in the order the sequential model draws them), the same batches in the same order, Adam with the member's
learning rate, BatchNorm statistics per member, and the sequential early-stopping and checkpoint rules applied
per member. Weights are stacked along a leading member dimension and every layer is one batched matmul
(baddbmm), BatchNorm one call with (member, feature) pairs as channels; the losses and the Adam step size are
computed per member as torch computes them, so on CPU every member's weights equal the sequential ones bit for
bit (tests/eval/test_probe_batched.py; a fused mean over members or a tensor step size would round differently, and
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

from eval.probe import CheckpointTracker, FittedProbe, SplitScorer, build_mlp
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


class _BatchedLinear(torch.autograd.Function):
    """baddbmm(bias, h, weight^T) whose weight gradient is computed straight in the weight's (M, out, in) layout
    (autograd's would be a transposed view that accumulating into the weight copies element by element)."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(h, weight)
        return torch.baddbmm(bias, h, weight.transpose(1, 2))

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        h, weight = ctx.saved_tensors
        grad_h = torch.bmm(grad, weight) if ctx.needs_input_grad[0] else None
        return grad_h, torch.bmm(grad.transpose(1, 2), h), grad.sum(dim=1, keepdim=True)


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
        """x: (B, D) shared by all members or (M, B, D) one per member → logits (M, B, n_labels).

        masks: per hidden layer a (M, B, H) dropout multiplier (training), or None (eval mode). Every op gives
        each member bit for bit what the sequential model's op gives (baddbmm = addmm per member; BatchNorm
        with members × features as channels = BatchNorm1d per member)."""
        members = self.parameters["0.weight"].shape[0]
        h = x.expand(members, *x.shape) if x.dim() == 2 else x
        for layer, index in enumerate(self.linear):
            weight, bias = self.parameters[f"{index}.weight"], self.parameters[f"{index}.bias"]
            h = _BatchedLinear.apply(h, weight, bias)
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


def _losses(logits: torch.Tensor, y: torch.Tensor, multiclass: bool) -> torch.Tensor:
    """Each member's mean loss (M,) from logits (M, B, C) and targets shared or one per member: the sequential
    loss function called once per member,
    so that its gradients are the sequential ones bit for bit (a fused mean over members rounds differently)."""
    loss_fn = F.cross_entropy if multiclass else F.binary_cross_entropy_with_logits
    per_member = y.dim() == (logits.dim() - 1 if multiclass else logits.dim())  # (M, B[, L]) or shared (B[, L])
    targets = list(y) if per_member else [y] * len(logits)
    return torch.stack([loss_fn(member_logits, t if multiclass else t.to(logits.dtype))
                        for member_logits, t in zip(logits, targets)])


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


@dataclass
class _GroupData:
    """A group's training rows and validation splits: one set shared by all members (x 2-D), or one set per
    member (x 3-D; fold rotations with equally many training rows), validation rows zero-padded to equal length
    (eval-mode BatchNorm treats rows independently, so padding changes no member's real rows)."""

    x: torch.Tensor  # (N, D) shared or (M, N, D)
    y: torch.Tensor  # (N,) / (N, L) shared or (M, N) / (M, N, L)
    x_valid: torch.Tensor  # (n, D) shared or (M, n_max, D)
    y_valid: list[torch.Tensor]  # per member (n_m,) or (n_m, L)
    valid: list[SplitScorer]  # per member

    @property
    def shared(self) -> bool:
        return self.x.dim() == 2

    @classmethod
    def build(cls, trains: list, valids: list[SplitScorer], device: str) -> _GroupData:
        def tensor(a, dtype=None):
            return torch.as_tensor(a, dtype=dtype, device=device)

        y_valid = [tensor(v.features.y) for v in valids]
        if all(t is trains[0] for t in trains) and all(v is valids[0] for v in valids):
            return cls(x=tensor(trains[0][0], torch.float32), y=tensor(trains[0][1]),
                       x_valid=tensor(valids[0].features.x, torch.float32), y_valid=y_valid, valid=list(valids))
        longest = max(len(v.features.x) for v in valids)
        x_valid = torch.zeros(len(valids), longest, valids[0].features.x.shape[1], device=device)
        for m, v in enumerate(valids):
            x_valid[m, : len(v.features.x)] = tensor(v.features.x, torch.float32)
        return cls(x=torch.stack([tensor(t[0], torch.float32) for t in trains]),
                   y=torch.stack([tensor(t[1]) for t in trains]), x_valid=x_valid, y_valid=y_valid, valid=list(valids))

    def keep(self, index: list[int]) -> None:
        """Keep only these members (positions in the current batch)."""
        self.y_valid, self.valid = [self.y_valid[i] for i in index], [self.valid[i] for i in index]
        if not self.shared:
            selected = torch.tensor(index, device=self.x.device)
            self.x, self.y, self.x_valid = self.x[selected], self.y[selected], self.x_valid[selected]

    def batch(self, start: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.shared:
            return self.x[start : start + size], self.y[start : start + size]
        return self.x[:, start : start + size], self.y[:, start : start + size]

    @property
    def n_rows(self) -> int:
        return self.x.shape[-2]


def _validate(model: StackedMLP, data: _GroupData, validating: list[int], use_scoring: bool,
              multiclass: bool) -> list[tuple[float, object]]:
    """(monitored value, post-processing) of the members at these batch positions."""
    logits, probs = _predict(model, data.x_valid, multiclass)
    if data.shared and use_scoring:  # every validating member's post-processing and scoring at once
        return data.valid[0].primaries(probs[validating].cpu().numpy())
    chosen = []
    for i in validating:
        rows = len(data.y_valid[i])
        if use_scoring:
            chosen.append(data.valid[i].primary(probs[i, :rows].cpu().numpy()))
        else:
            chosen.append((float(_losses(logits[i : i + 1, :rows], data.y_valid[i], multiclass)[0]), None))
    return chosen


def _train_group(members: list[Member], task, trains: list, valids: list[SplitScorer],
                 device: str) -> list[FittedProbe]:
    """Train members of one group_key (and training length) together; FittedProbes in the members' order."""
    confs = [member.conf for member in members]
    hidden_layers, hidden_dim, batch_size = group_key(confs[0])
    multiclass = task.prediction_type == "multiclass"
    data = _GroupData.build(trains, valids, device)
    state, generators = _stack_members(members, data.x.shape[-1], len(task.label_vocab))
    model = StackedMLP(state, hidden_layers, device)
    optimizer = StackedAdam(model, [c["lr"] for c in confs])
    use_scoring = task.use_scoring_for_early_stopping
    larger_is_better = maximize(task.evaluation[0]) if use_scoring else False
    trackers = [CheckpointTracker(patience=c["patience"], larger_is_better=larger_is_better) for c in confs]
    active = list(range(len(members)))  # member indices still training, in the order of the batch dimension
    for epoch in range(max(c["max_epochs"] for c in confs)):
        for start in range(0, data.n_rows, batch_size):  # same order every epoch, as heareval
            x_batch, y_batch = data.batch(start, batch_size)
            masks = _dropout_masks(active, confs, generators, x_batch.shape[-2], hidden_dim, hidden_layers, device)
            _losses(model.forward(x_batch, masks), y_batch, multiclass).sum().backward()
            optimizer.step()
        validating = [i for i, m in enumerate(active) if (epoch + 1) % confs[m]["check_val_every_n_epoch"] == 0]
        finished = set()
        if validating:
            chosen = _validate(model, data, validating, use_scoring, multiclass)
            for i, (value, postprocessing) in zip(validating, chosen):
                if trackers[active[i]].update(value, epoch, postprocessing, lambda i=i: model.member_state(i)):
                    finished.add(active[i])
        finished |= {m for m in active if epoch + 1 >= confs[m]["max_epochs"]}
        if finished:
            remaining = [i for i, m in enumerate(active) if m not in finished]
            active = [active[i] for i in remaining]
            if not active:
                break
            model.keep(torch.tensor(remaining, device=device))
            optimizer.keep(torch.tensor(remaining, device=device))
            data.keep(remaining)
    for member, tracker in zip(members, trackers):
        if tracker.best is None:
            raise ValueError(f"grid point {member.conf} never validated: max_epochs < check_val_every_n_epoch")
    return [tracker.best for tracker in trackers]


def train_probes(
    members: list[Member], task, train: tuple[np.ndarray, np.ndarray], valid: SplitScorer, device: str
) -> list[FittedProbe]:
    """``[train_probe(m.conf, task, train, valid, device, seed=m.seed) for m in members]``, batched by group_key."""
    return train_probes_on_splits([(member, train, valid) for member in members], task, device)


def train_probes_on_splits(jobs: list[tuple[Member, tuple, SplitScorer]], task, device: str) -> list[FittedProbe]:
    """``train_probe`` of each (member, train, valid) job, e.g. the fold rotations of a k-fold task; jobs with the
    same group_key and number of training rows train in one batch."""
    groups: dict[tuple, list[int]] = {}
    for index, (member, train, _) in enumerate(jobs):
        groups.setdefault((*group_key(member.conf), len(train[0])), []).append(index)
    fits: list[FittedProbe | None] = [None] * len(jobs)
    for indices in groups.values():
        members, trains, valids = zip(*(jobs[i] for i in indices))
        for index, fit in zip(indices, _train_group(list(members), task, list(trains), list(valids), device)):
            fits[index] = fit
    return fits
