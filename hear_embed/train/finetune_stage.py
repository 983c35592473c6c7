"""Stage 3: fine-tuning. A pretrained Acoustic Model + SpectrogramMixture + TaskModel + classification head
(``HEARClassifier``) trained end to end with cross-entropy on labelled clips, on the shared runner (config
file, checkpoints, exact resume).

Each epoch visits the training clips in a seeded permutation (a fresh one per epoch, in batches of
``train.micro_batch``; a last batch of one clip is skipped, as BatchNorm in the head needs two). After every
epoch the model is scored on validation with the caller's ``validate``; the best epoch's weights are part of
the stage's state, so a resumed run keeps them, and are loaded into the classifier at the end.
Scoring, task splits and score rows are the harness's (``eval/finetune.py``).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from torch import nn

from hear_embed.config import ClassificationDecoderConfig, TaskModelConfig
from hear_embed.heads import HEARClassifier
from hear_embed.train.config_file import read_sections, run_record
from hear_embed.train.data import pad_clips
from hear_embed.train.checkpoints import TrainingError
from hear_embed.train.runner import TrainConfig, train

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "finetune.json"


@dataclass(frozen=True)
class FinetuneConfig:
    """What fine-tuning adds to the train section (whose ``learning_rate`` is the Acoustic Model's and whose
    ``micro_batch`` is the batch size; ``steps`` is set from the epochs and the number of training clips)."""

    epochs: int = 10
    head_learning_rate: float = 1e-3  # SpectrogramMixture, TaskModel and classification head

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ValueError(f"epochs must be at least 1, got {self.epochs}")


SECTIONS = {"train": TrainConfig, "finetune": FinetuneConfig}


def read_config(path: str | Path = DEFAULT_CONFIG) -> dict:
    """{"train": TrainConfig, "finetune": FinetuneConfig} from a JSON config (default: configs/finetune.json)."""
    return read_sections(path, SECTIONS)


def build_classifier(acoustic_model: nn.Module, num_classes: int) -> HEARClassifier:
    """HEARClassifier around a copy of the pretrained ``acoustic_model`` (TaskModel width = its hidden size);
    the other parts are initialized from torch's global RNG."""
    config = acoustic_model.config
    hidden = config.hidden_size
    task = TaskModelConfig(hidden_size=hidden, intermediate_size=4 * hidden, num_attention_heads=config.num_attention_heads)
    classifier = HEARClassifier(config, task, ClassificationDecoderConfig(num_classes=num_classes, hidden_size=hidden))
    classifier.acoustic_model.load_state_dict(acoustic_model.state_dict())
    return classifier


def steps_per_epoch(num_clips: int, batch_size: int) -> int:
    """Training steps of one epoch: batches of ``batch_size``, without a last batch of a single clip."""
    return num_clips // batch_size + (1 if num_clips % batch_size >= 2 else 0)


def batch_rows(num_clips: int, batch_size: int, seed: int, start_step: int = 0) -> Iterator[np.ndarray]:
    """Row indices of every training step from ``start_step`` on: per epoch one permutation from
    ``np.random.default_rng(seed)`` drawn in sequence, cut into batches (single-clip batches skipped)."""
    rng = np.random.default_rng(seed)
    step = 0
    while True:
        order = rng.permutation(num_clips)
        for start in range(0, num_clips, batch_size):
            rows = order[start: start + batch_size]
            if len(rows) < 2:  # BatchNorm in the head needs two clips
                continue
            if step >= start_step:
                yield rows
            step += 1


@torch.no_grad()
def predict(classifier: HEARClassifier, audio: list[np.ndarray], batch_size: int) -> np.ndarray:
    """(clips, classes) softmax probabilities of ``classifier`` in eval mode, ``batch_size`` clips at a time."""
    classifier.eval()
    device = next(classifier.parameters()).device
    probabilities = []
    for start in range(0, len(audio), batch_size):
        waveform, lengths = pad_clips(audio[start: start + batch_size])
        probabilities.append(torch.softmax(classifier(waveform.to(device), lengths.to(device)), dim=-1).cpu().numpy())
    return np.concatenate(probabilities)


class FinetuneStage(nn.Module):
    """The stage-3 model; ``forward(batch)`` -> {"loss"} (cross-entropy of the classifier's logits).

    ``validate(classifier) -> score`` runs after every ``steps_per_epoch`` steps; the best weights (highest
    score, or lowest when not ``maximize``) are kept in the stage's state (``best``).
    """

    def __init__(self, classifier: HEARClassifier, head_learning_rate: float, epoch_steps: int,
                 validate: Callable[[HEARClassifier], float], maximize: bool = True):
        super().__init__()
        self.classifier = classifier
        self.head_learning_rate, self.epoch_steps = head_learning_rate, epoch_steps
        self.validate, self.maximize = validate, maximize
        self.best = {"score": -math.inf if maximize else math.inf, "epoch": -1, "state": {}}

    def parameter_groups(self) -> list[dict]:
        """AdamW groups: the Acoustic Model at the train section's rate, the rest at ``head_learning_rate``."""
        heads = [p for name, p in self.classifier.named_parameters() if not name.startswith("acoustic_model.")]
        return [{"params": list(self.classifier.acoustic_model.parameters())},
                {"params": heads, "lr": self.head_learning_rate}]

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        logits = self.classifier(batch["waveform"], batch["lengths"])
        return {"loss": nn.functional.cross_entropy(logits, batch["labels"])}

    def after_step(self, step: int) -> None:
        if step % self.epoch_steps:
            return
        score = float(self.validate(self.classifier))
        self.train()
        if (score > self.best["score"]) if self.maximize else (score < self.best["score"]):
            state = {key: value.detach().clone() for key, value in self.classifier.state_dict().items()}
            self.best = {"score": score, "epoch": step // self.epoch_steps - 1, "state": state}

    def log_values(self) -> dict:
        return {"best_epoch": self.best["epoch"], "best_validation": f"{self.best['score']:.6f}"}

    def get_extra_state(self) -> dict:
        return self.best

    def set_extra_state(self, state: dict) -> None:
        self.best = state


def finetune(classifier: HEARClassifier, audio: list[np.ndarray], labels: np.ndarray, sections: dict,
             validate: Callable[[HEARClassifier], float], out_dir: str | Path, *, maximize: bool = True,
             describe: dict | None = None) -> dict:
    """Fine-tune ``classifier`` on ``audio`` (16 kHz clips) with class indices ``labels`` (clips,) in ``out_dir``.

    ``sections`` is :func:`read_config`'s result (``train.seed`` seeds the batch order and the per-step
    randomness); ``describe`` (JSON-like) is recorded in the checkpoint with it, so resuming another task or
    model into the same folder is refused. When finished, the best epoch's weights are loaded into
    ``classifier``. Returns the runner's result plus "validation_score" and "best_epoch".
    """
    config, options = sections["train"], sections["finetune"]
    epoch_steps = steps_per_epoch(len(audio), config.micro_batch)
    if epoch_steps == 0:
        raise ValueError(f"fine-tuning needs at least 2 training clips, got {len(audio)}")
    config = dataclasses.replace(config, steps=options.epochs * epoch_steps, accumulation=1)
    targets = torch.as_tensor(labels, dtype=torch.long)

    def batches(start_step: int, rank: int, world_size: int) -> Iterator[dict]:
        if world_size > 1:
            raise TrainingError(f"fine-tuning runs in one process; rank {rank} of {world_size} under torchrun")
        for rows in batch_rows(len(audio), config.micro_batch, config.seed, start_step):
            waveform, lengths = pad_clips([audio[row] for row in rows])
            yield {"waveform": waveform, "lengths": lengths, "labels": targets[rows]}

    stage = FinetuneStage(classifier, options.head_learning_rate, epoch_steps, validate, maximize)
    record = {**run_record({**sections, "train": config}), "run": describe or {}}
    result = train(stage, batches, config, out_dir, run_config=record)
    if result["finished"]:
        if not stage.best["state"]:
            raise TrainingError(f"fine-tuning in {out_dir}: no epoch gave a comparable validation score "
                                f"(last best {stage.best['score']})")
        classifier.load_state_dict(stage.best["state"])
    return {**result, "validation_score": stage.best["score"], "best_epoch": stage.best["epoch"]}
