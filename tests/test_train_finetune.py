"""Stage 3 (eval/finetune.py): end-to-end fine-tuning on HEAR task folders, scores in the harness's CSV columns."""
from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import pytest
import torch

from eval import finetune
from eval.report import SCORE_COLUMNS
from eval.suites.mini import scene_metadata, write_task
from hear_embed.acoustic_model import AcousticModel
from hear_embed.audio_io import read_audio
from hear_embed.config import AcousticModelConfig
from hear_embed.weights import save_checkpoint
from train_fixtures import training_clips


@pytest.fixture(scope="module")
def small_weights(tmp_path_factory):
    torch.manual_seed(0)
    config = AcousticModelConfig(hidden_size=16, intermediate_size=32, num_attention_heads=2, num_transformer_layers=1)
    return save_checkpoint(AcousticModel(config), tmp_path_factory.mktemp("weights") / "small.pt")


def clip_task(folder, split_mode: str, long_clip: bool = False):
    """Two-class scene task from real clips: label = digit parity of the FSDD file (shipped clips)."""
    clips = training_clips(16)
    audio = [read_audio(p)[:16000] for p in clips]
    audio = [np.pad(a, (0, 16000 - len(a))) for a in audio]
    labels = [[str(int(p.name[0]) % 2)] for p in clips]
    names = [p.name for p in clips]
    if split_mode == "trainvaltest":
        parts = {"train": range(0, len(clips) - 4), "valid": range(len(clips) - 4, len(clips) - 2),
                 "test": range(len(clips) - 2, len(clips))}
    else:
        parts = {f"fold{k:02d}": range(k, len(clips), 3) for k in range(3)}
    splits = {split: {names[i]: (audio[i], labels[i]) for i in rows} for split, rows in parts.items()}
    if long_clip:
        splits[next(iter(splits))]["long.wav"] = (np.zeros(31 * 16000, dtype=np.float32), ["0"])
    write_task(folder, scene_metadata("parity", split_mode, ["top1_acc"]), ["0", "1"], splits)
    return folder


def arguments(tasks_dir, out, weights, **extra):
    parser = argparse.ArgumentParser()
    finetune.add_arguments(parser)
    argv = ["--tasks-dir", str(tasks_dir), "--out", str(out), "--weights", str(weights), "--epochs", "2",
            "--batch-size", "4", "--threads", "1", "--no-progress"]
    for key, value in extra.items():
        argv += [f"--{key.replace('_', '-')}"] + ([] if value is True else [str(value)])
    return parser.parse_args(argv)


@pytest.mark.parametrize("split_mode", ["trainvaltest", "new_split_kfold"])
def test_finetune_writes_harness_scores(tmp_path, small_weights, split_mode):
    tasks = clip_task(tmp_path / "tasks" / "parity", split_mode).parent
    assert finetune.run(arguments(tasks, tmp_path / "out", small_weights, max_folds=2)) == 0
    scores = pd.read_csv(tmp_path / "out" / "scores.csv")
    assert list(scores.columns) == SCORE_COLUMNS
    row = scores.iloc[0]
    assert (row["model"], row["task"], row["metric"], row["protocol"]) == ("hear_embed", "parity", "top1_acc", "finetune")
    assert 0.0 <= row["score"] <= 1.0 and row["n_folds"] == (1 if split_mode == "trainvaltest" else 2)
    assert row["split"] == ("test" if split_mode == "trainvaltest" else "mean over test folds")


def test_pretrained_weights_are_loaded(small_weights):
    classifier = finetune.build_classifier(str(small_weights), num_classes=3)
    saved = torch.load(small_weights, weights_only=False)["state_dict"]
    for key, value in classifier.acoustic_model.state_dict().items():
        assert torch.equal(value, saved[key]), key
    assert classifier.decoder.out.out_features == 3 and classifier.task_model.config.hidden_size == 16


def test_clip_over_30_seconds_is_a_clear_error(tmp_path, small_weights):
    tasks = clip_task(tmp_path / "tasks" / "parity", "trainvaltest", long_clip=True).parent
    with pytest.raises(ValueError, match=r"long.wav lasts 31.0 s.*--crop-long"):
        finetune.run(arguments(tasks, tmp_path / "out", small_weights))
