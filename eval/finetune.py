"""The paper's fine-tuning protocol: a pretrained Acoustic Model + SpectrogramMixture + TaskModel +
classification head (``HEARClassifier``) trained end to end with cross-entropy on a labelled scene task.

Per split arrangement (heareval's: trainvaltest, or k-fold with test fold i and validation fold i + 1), the
model is trained for ``--epochs`` epochs; the epoch with the best validation score is tested. Scores go to
``OUT/scores.csv`` with the columns of ``python -m eval run`` and ``protocol`` = "finetune".
Clips are at most 30 s (the TaskModel's position table); longer clips are an error unless ``--crop-long``
keeps their first 30 s.
"""
from __future__ import annotations

import argparse
import copy
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from eval.probe import aggregate_folds, split_arrangements
from eval.run import RunSpec, ScoreRow, require_device, write_scores
from eval.score import maximize, scene_score
from eval.tasks import Task, find_tasks, validate_task
from hear_embed.atomic_files import write_json_atomically
from hear_embed.audio_io import read_audio
from hear_embed.config import ClassificationDecoderConfig, TaskModelConfig
from hear_embed.heads import HEARClassifier
from hear_embed.weights import load_acoustic_model

SAMPLE_RATE = 16000
MAX_SECONDS = 30.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tasks-dir", type=Path, required=True, help="a task folder or a folder of task folders")
    parser.add_argument("--tasks", nargs="+", default=None, help="only these tasks (folder or task name)")
    parser.add_argument("--weights", default="tiny", help="Acoustic Model weights: 'authors', 'tiny', 'random' or a "
                        "checkpoint file (anything hear_embed.weights.load_acoustic_model reads); default tiny")
    parser.add_argument("--out", type=Path, required=True, help="folder for scores.csv and per-task JSON")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=1e-4, help="AdamW learning rate of the Acoustic Model")
    parser.add_argument("--head-lr", type=float, default=1e-3, help="learning rate of the mixture, TaskModel and head")
    parser.add_argument("--max-folds", type=int, default=0, help="evaluate only the first N arrangements (0: all)")
    parser.add_argument("--crop-long", action="store_true", help="keep the first 30 s of longer clips instead of failing")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--label", default=None, help="model name in tables (default: hear_embed[WEIGHTS] finetune)")
    parser.add_argument("--no-progress", action="store_true")


def load_split(task: Task, split: str, crop_long: bool) -> tuple[list[np.ndarray], np.ndarray]:
    """Audio (16 kHz mono) and (n, n_labels) one-hot targets of one split."""
    audio, targets = [], []
    index = task.label_index
    max_samples = int(MAX_SECONDS * SAMPLE_RATE)
    for filename, labels in task.labels(split).items():
        clip = read_audio(task.audio_path(split, filename, SAMPLE_RATE), SAMPLE_RATE)
        if len(clip) > max_samples:
            if not crop_long:
                raise ValueError(f"{task.name}/{split}/{filename} lasts {len(clip) / SAMPLE_RATE:.1f} s; fine-tuning "
                                 f"accepts at most {MAX_SECONDS:g} s (the TaskModel's positions): pass --crop-long")
            clip = clip[:max_samples]
        audio.append(clip)
        target = np.zeros(len(task.label_vocab), dtype=np.float32)
        target[[index[label] for label in labels]] = 1.0
        targets.append(target)
    return audio, np.stack(targets)


def pad_batch(clips: list[np.ndarray], device: str) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(c) for c in clips])
    waveform = torch.zeros(len(clips), int(lengths.max()))
    for row, clip in enumerate(clips):
        waveform[row, : len(clip)] = torch.from_numpy(clip)
    return waveform.to(device), lengths.to(device)


def build_classifier(weights: str, num_classes: int) -> HEARClassifier:
    """HEARClassifier sized after the pretrained Acoustic Model (TaskModel width = its hidden size)."""
    acoustic, _ = load_acoustic_model(weights)
    hidden = acoustic.config.hidden_size
    task = TaskModelConfig(hidden_size=hidden, intermediate_size=4 * hidden,
                           num_attention_heads=acoustic.config.num_attention_heads)
    classifier = HEARClassifier(acoustic.config, task, ClassificationDecoderConfig(num_classes=num_classes, hidden_size=hidden))
    classifier.acoustic_model.load_state_dict(acoustic.state_dict())
    return classifier


@torch.no_grad()
def predict(model: HEARClassifier, audio: list[np.ndarray], batch_size: int, device: str) -> np.ndarray:
    model.eval()
    probabilities = []
    for start in range(0, len(audio), batch_size):
        waveform, lengths = pad_batch(audio[start: start + batch_size], device)
        probabilities.append(torch.softmax(model(waveform, lengths), dim=-1).cpu().numpy())
    return np.concatenate(probabilities)


def finetune_arrangement(task: Task, data: dict, arrangement: dict, args, seed: int) -> dict:
    """Train on the arrangement's train splits, pick the best epoch on validation, score the test split."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    train_audio = [clip for split in arrangement["train"] for clip in data[split][0]]
    train_targets = np.concatenate([data[split][1] for split in arrangement["train"]])
    valid_audio, valid_targets = data[arrangement["valid"][0]]
    test_audio, test_targets = data[arrangement["test"][0]]
    model = build_classifier(args.weights, len(task.label_vocab))
    model.to(args.device)
    backbone = list(model.acoustic_model.parameters())
    heads = [p for name, p in model.named_parameters() if not name.startswith("acoustic_model.")]
    optimizer = torch.optim.AdamW([{"params": backbone, "lr": args.lr}, {"params": heads, "lr": args.head_lr}])
    steps_per_epoch = math.ceil(len(train_audio) / args.batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(1.0, step / (args.epochs * steps_per_epoch)))))
    metric = task.primary_metric
    best = {"score": -math.inf if maximize(metric) else math.inf, "epoch": -1, "state": None}
    labels = torch.from_numpy(train_targets.argmax(axis=1))
    for epoch in range(args.epochs):
        model.train()
        order = rng.permutation(len(train_audio))
        for start in range(0, len(order), args.batch_size):
            rows = order[start: start + args.batch_size]
            if len(rows) < 2:  # BatchNorm in the head needs two clips
                continue
            waveform, lengths = pad_batch([train_audio[i] for i in rows], args.device)
            loss = nn.functional.cross_entropy(model(waveform, lengths), labels[rows].to(args.device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        score = scene_score(metric, predict(model, valid_audio, args.batch_size, args.device), valid_targets)[metric]
        if (score > best["score"]) if maximize(metric) else (score < best["score"]):
            best = {"score": score, "epoch": epoch, "state": copy.deepcopy(model.state_dict())}
    model.load_state_dict(best["state"])
    test_probs = predict(model, test_audio, args.batch_size, args.device)
    scores = {}
    for name in task.evaluation:
        scores.update(scene_score(name, test_probs, test_targets))
    return {"scores": scores, "validation_score": best["score"], "best_epoch": best["epoch"]}


def finetune_task(task: Task, args) -> dict:
    if task.embedding_type != "scene" or task.prediction_type != "multiclass":
        raise ValueError(f"task {task.name} is {task.embedding_type}/{task.prediction_type}: fine-tuning supports "
                         "scene/multiclass tasks only")
    arrangements = split_arrangements(task)[: args.max_folds or None]
    needed = sorted({split for arrangement in arrangements for names in arrangement.values() for split in names})
    data = {split: load_split(task, split, args.crop_long) for split in needed}
    fold_scores, details = {}, {}
    for index, arrangement in enumerate(tqdm(arrangements, desc=f"{task.name} finetune", disable=args.no_progress)):
        result = finetune_arrangement(task, data, arrangement, args, seed=args.seed * 1000 + index)
        fold_scores[arrangement["test"][0]] = result["scores"]
        details[arrangement["test"][0]] = {"validation_score": result["validation_score"], "best_epoch": result["best_epoch"]}
    mean, std = aggregate_folds(task, fold_scores)
    return {"fold_scores": fold_scores, "details": details, "mean": mean, "std": std,
            "validation_score": float(np.mean([d["validation_score"] for d in details.values()]))}


def run(args) -> int:
    require_device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    folders = find_tasks(args.tasks_dir, args.tasks)
    tasks = [validate_task(folder, SAMPLE_RATE) for folder in folders]
    eligible = [t for t in tasks if t.embedding_type == "scene" and t.prediction_type == "multiclass"]
    for task in tasks:
        if task not in eligible:
            print(f"skipping {task.name}: {task.embedding_type}/{task.prediction_type} (fine-tuning needs scene/multiclass)")
    if not eligible:
        raise ValueError(f"no scene/multiclass task in {args.tasks_dir}")
    spec = RunSpec(model="hear_embed", weights=args.weights, tasks_dir=args.tasks_dir, out=args.out, grid="",
                   options={"epochs": args.epochs, "batch_size": args.batch_size, "lr": args.lr, "head_lr": args.head_lr},
                   device=args.device, seed=args.seed, label=args.label or f"hear_embed[{args.weights}] finetune",
                   progress=not args.no_progress)
    rows = []
    for task in eligible:
        start = time.perf_counter()
        result = finetune_task(task, args)
        result.update(task=task.name, primary_metric=task.primary_metric, protocol="finetune",
                      probe_seconds=time.perf_counter() - start)
        write_json_atomically(args.out / "tasks" / f"{task.path.name}.json", result)
        rows.append(ScoreRow.from_result(spec, result))
        print(f"{spec.display_label}\t{task.name}\t{task.primary_metric}\t{result['mean']:.4f} ± {result['std']:.4f}")
    write_scores(args.out / "scores.csv", rows)
    return 0
