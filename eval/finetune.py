"""The paper's fine-tuning protocol on HEAR task folders: task splits, scoring and score rows.

The model, loss and training loop are stage 3 of the training pipeline (``hear_embed.train.finetune_stage``,
config ``hear_embed/train/configs/finetune.json``). Per split arrangement (heareval's: trainvaltest, or k-fold
with test fold i and validation fold i + 1) the classifier is fine-tuned in ``OUT/checkpoints/TASK/TEST_SPLIT``
(rerun the same command to resume a stopped run exactly); the epoch with the best validation score is tested.
Scores go to ``OUT/scores.csv`` with the columns of ``python -m eval run`` and ``protocol`` = "finetune".
Clips are at most 30 s (the TaskModel's position table); longer clips are an error unless ``--crop-long``
keeps their first 30 s.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from eval.probe import aggregate_folds, split_arrangements
from eval.run import RunSpec, ScoreRow, write_scores
from eval.score import maximize, scene_score
from eval.tasks import Task, find_tasks, validate_task
from hear_embed.atomic_files import write_json_atomically
from hear_embed.audio_io import read_audio
from hear_embed.train import finetune_stage
from hear_embed.train.checkpoints import TrainingError
from hear_embed.train.config_file import ConfigError
from hear_embed.weights import load_acoustic_model

SAMPLE_RATE = 16000
MAX_SECONDS = 30.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--tasks-dir", type=Path, required=True, help="a task folder or a folder of task folders")
    parser.add_argument("--tasks", nargs="+", default=None, help="only these tasks (folder or task name)")
    parser.add_argument("--weights", default="tiny", help="Acoustic Model weights: 'authors', 'tiny', 'random' or a "
                        "checkpoint file (anything hear_embed.weights.load_acoustic_model reads); default tiny")
    parser.add_argument("--out", type=Path, required=True, help="folder for scores.csv, per-task JSON and checkpoints")
    parser.add_argument("--config", type=Path, default=finetune_stage.DEFAULT_CONFIG,
                        help="fine-tuning config (default: hear_embed/train/configs/finetune.json); the flags below override it")
    parser.add_argument("--epochs", type=int, default=None, help="finetune.epochs (default 10)")
    parser.add_argument("--batch-size", type=int, default=None, help="train.micro_batch (default 16)")
    parser.add_argument("--lr", type=float, default=None, help="AdamW learning rate of the Acoustic Model (default 1e-4)")
    parser.add_argument("--head-lr", type=float, default=None,
                        help="learning rate of the mixture, TaskModel and head (default 1e-3)")
    parser.add_argument("--max-folds", type=int, default=0, help="evaluate only the first N arrangements (0: all)")
    parser.add_argument("--crop-long", action="store_true", help="keep the first 30 s of longer clips instead of failing")
    parser.add_argument("--seed", type=int, default=None, help="train.seed; arrangement i uses seed * 1000 + i")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (train.num_threads; 0: torch's default)")
    parser.add_argument("--label", default=None, help="model name in tables (default: hear_embed[WEIGHTS] finetune)")
    parser.add_argument("--no-progress", action="store_true")


def read_sections(args) -> dict:
    """The config file's sections with the command line's overrides."""
    sections = finetune_stage.read_config(args.config)
    train = {key: value for key, value in {"micro_batch": args.batch_size, "learning_rate": args.lr, "seed": args.seed,
                                            "num_threads": args.threads}.items() if value is not None}
    options = {key: value for key, value in {"epochs": args.epochs, "head_learning_rate": args.head_lr}.items()
               if value is not None}
    return {"train": dataclasses.replace(sections["train"], **train),
            "finetune": dataclasses.replace(sections["finetune"], **options)}


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


def finetune_arrangement(task: Task, data: dict, arrangement: dict, args, sections: dict, seed: int) -> dict | None:
    """Fine-tune on the arrangement's train splits, pick the best epoch on validation, score the test split;
    None when the run stopped early (wall-time or step budget of the config)."""
    train_audio = [clip for split in arrangement["train"] for clip in data[split][0]]
    train_targets = np.concatenate([data[split][1] for split in arrangement["train"]])
    valid_audio, valid_targets = data[arrangement["valid"][0]]
    test_audio, test_targets = data[arrangement["test"][0]]
    batch_size = sections["train"].micro_batch
    metric = task.primary_metric

    def validate(classifier) -> float:
        return scene_score(metric, finetune_stage.predict(classifier, valid_audio, batch_size), valid_targets)[metric]

    torch.manual_seed(seed)  # initializes the mixture, TaskModel and head
    acoustic, _ = load_acoustic_model(args.weights)
    classifier = finetune_stage.build_classifier(acoustic, len(task.label_vocab))
    sections = {**sections, "train": dataclasses.replace(sections["train"], seed=seed)}
    test_split = arrangement["test"][0]
    result = finetune_stage.finetune(
        classifier, train_audio, train_targets.argmax(axis=1), sections, validate,
        args.out / "checkpoints" / task.path.name / test_split, maximize=maximize(metric),
        describe={"task": task.name, "weights": str(args.weights), "arrangement": arrangement})
    if not result["finished"]:
        return None
    test_probs = finetune_stage.predict(classifier, test_audio, batch_size)
    scores = {}
    for name in task.evaluation:
        scores.update(scene_score(name, test_probs, test_targets))
    return {"scores": scores, "validation_score": result["validation_score"], "best_epoch": result["best_epoch"]}


def finetune_task(task: Task, args, sections: dict) -> dict | None:
    """Scores of every arrangement and their mean; None when a run stopped early."""
    if task.embedding_type != "scene" or task.prediction_type != "multiclass":
        raise ValueError(f"task {task.name} is {task.embedding_type}/{task.prediction_type}: fine-tuning supports "
                         "scene/multiclass tasks only")
    arrangements = split_arrangements(task)[: args.max_folds or None]
    needed = sorted({split for arrangement in arrangements for names in arrangement.values() for split in names})
    data = {split: load_split(task, split, args.crop_long) for split in needed}
    fold_scores, details = {}, {}
    for index, arrangement in enumerate(tqdm(arrangements, desc=f"{task.name} finetune", disable=args.no_progress)):
        result = finetune_arrangement(task, data, arrangement, args, sections,
                                      seed=sections["train"].seed * 1000 + index)
        if result is None:
            return None
        fold_scores[arrangement["test"][0]] = result["scores"]
        details[arrangement["test"][0]] = {"validation_score": result["validation_score"], "best_epoch": result["best_epoch"]}
    mean, std = aggregate_folds(task, fold_scores)
    return {"fold_scores": fold_scores, "details": details, "mean": mean, "std": std,
            "validation_score": float(np.mean([d["validation_score"] for d in details.values()]))}


def run(args) -> int:
    try:
        sections = read_sections(args)
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    folders = find_tasks(args.tasks_dir, args.tasks)
    tasks = [validate_task(folder, SAMPLE_RATE) for folder in folders]
    eligible = [t for t in tasks if t.embedding_type == "scene" and t.prediction_type == "multiclass"]
    for task in tasks:
        if task not in eligible:
            print(f"skipping {task.name}: {task.embedding_type}/{task.prediction_type} (fine-tuning needs scene/multiclass)")
    if not eligible:
        raise ValueError(f"no scene/multiclass task in {args.tasks_dir}")
    options = {"epochs": sections["finetune"].epochs, "batch_size": sections["train"].micro_batch,
               "lr": sections["train"].learning_rate, "head_lr": sections["finetune"].head_learning_rate}
    spec = RunSpec(model="hear_embed", weights=args.weights, tasks_dir=args.tasks_dir, out=args.out, grid="",
                   options=options, device="cuda" if torch.cuda.is_available() else "cpu",
                   seed=sections["train"].seed, label=args.label or f"hear_embed[{args.weights}] finetune",
                   progress=not args.no_progress)
    rows = []
    for task in eligible:
        start = time.perf_counter()
        try:
            result = finetune_task(task, args, sections)
        except TrainingError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        if result is None:
            print(f"{task.name}: stopped before the end (train.max_wall_seconds or train.stop_after_steps); "
                  "rerun the same command to resume", file=sys.stderr)
            return 1
        result.update(task=task.name, primary_metric=task.primary_metric, protocol="finetune",
                      probe_seconds=time.perf_counter() - start)
        write_json_atomically(args.out / "tasks" / f"{task.path.name}.json", result)
        rows.append(ScoreRow.from_result(spec, result))
        print(f"{spec.display_label}\t{task.name}\t{task.primary_metric}\t{result['mean']:.4f} ± {result['std']:.4f}")
    write_scores(args.out / "scores.csv", rows)
    return 0
