"""Stage 3 (hear_embed/train/finetune_stage.py on the shared runner, driven by eval/finetune.py): end-to-end
fine-tuning on HEAR task folders, scores in the harness's CSV columns, the plain loop's numbers, exact resume."""
from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import sys

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
from hear_embed.train import finetune_stage
from hear_embed.train.seeds import mixed_seed
from hear_embed.weights import load_acoustic_model, save_checkpoint
from tests.builders.training import kill_after_logged_steps, training_clips


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
    classifier = finetune_stage.build_classifier(load_acoustic_model(str(small_weights))[0], num_classes=3)
    saved = torch.load(small_weights, weights_only=True)["state_dict"]
    for key, value in classifier.acoustic_model.state_dict().items():
        assert torch.equal(value, saved[key]), key
    assert classifier.decoder.out.out_features == 3 and classifier.task_model.config.hidden_size == 16


def test_clip_over_30_seconds_is_a_clear_error(tmp_path, small_weights):
    tasks = clip_task(tmp_path / "tasks" / "parity", "trainvaltest", long_clip=True).parent
    with pytest.raises(ValueError, match=r"long.wav lasts 31.0 s.*--crop-long"):
        finetune.run(arguments(tasks, tmp_path / "out", small_weights))


def plain_finetune(acoustic, audio, labels, valid_audio, valid_labels, *, seed, epochs, batch_size, lr, head_lr):
    """The fine-tuning loop written out plainly (eval/finetune.py before it moved onto the runner, plus the
    runner's per-step torch seed): returns the best epoch's classifier state and the best epoch."""
    torch.manual_seed(seed)
    model = finetune_stage.build_classifier(acoustic, num_classes=2)
    heads = [p for name, p in model.named_parameters() if not name.startswith("acoustic_model.")]
    optimizer = torch.optim.AdamW([{"params": list(model.acoustic_model.parameters()), "lr": lr},
                                   {"params": heads, "lr": head_lr}])
    steps_per_epoch = math.ceil(len(audio) / batch_size)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * min(1.0, step / (epochs * steps_per_epoch)))))
    rng, step, best = np.random.default_rng(seed), 0, (-math.inf, -1, None)
    for epoch in range(epochs):
        model.train()
        order = rng.permutation(len(audio))
        for start in range(0, len(order), batch_size):
            rows = order[start: start + batch_size]
            waveform = torch.zeros(len(rows), max(len(audio[i]) for i in rows))
            for row, i in enumerate(rows):
                waveform[row, : len(audio[i])] = torch.from_numpy(audio[i])
            lengths = torch.tensor([len(audio[i]) for i in rows])
            torch.manual_seed(mixed_seed(seed, step, 0, 0))
            loss = torch.nn.functional.cross_entropy(model(waveform, lengths), torch.from_numpy(labels[rows]))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
        probabilities = finetune_stage.predict(model, valid_audio, batch_size)
        score = float((probabilities.argmax(axis=1) == valid_labels).mean())
        if score > best[0]:
            best = (score, epoch, copy.deepcopy(model.state_dict()))
    return best[2], best[1]


def test_stage_matches_the_plain_loop(tmp_path, small_weights):
    """Same seed, same numbers: 10 clips in batches of 4 (no single-clip batch), 3 epochs."""
    clips = [read_audio(p)[:8000] for p in training_clips(14)]
    labels = np.array([i % 2 for i in range(14)])
    audio, valid_audio = clips[:10], clips[10:]
    acoustic = load_acoustic_model(str(small_weights))[0]
    expected_state, expected_epoch = plain_finetune(acoustic, audio, labels[:10], valid_audio, labels[10:], seed=3,
                                                    epochs=3, batch_size=4, lr=1e-4, head_lr=1e-3)

    def validate(classifier) -> float:
        return float((finetune_stage.predict(classifier, valid_audio, 4).argmax(axis=1) == labels[10:]).mean())

    sections = finetune_stage.read_config()
    sections = {"train": dataclasses.replace(sections["train"], micro_batch=4, seed=3, log_every=1),
                "finetune": dataclasses.replace(sections["finetune"], epochs=3)}
    torch.manual_seed(3)
    classifier = finetune_stage.build_classifier(acoustic, num_classes=2)
    result = finetune_stage.finetune(classifier, audio, labels[:10], sections, validate, tmp_path)
    assert result["finished"] and result["step"] == 9 and result["best_epoch"] == expected_epoch
    for key, value in classifier.state_dict().items():
        assert torch.equal(value, expected_state[key]), key


@pytest.mark.parametrize("num_clips,batch_size,expected", [(10, 4, 3), (9, 4, 2), (8, 4, 2), (2, 4, 1), (1, 4, 0)])
def test_steps_per_epoch_skip_single_clip_batches(num_clips, batch_size, expected):
    assert finetune_stage.steps_per_epoch(num_clips, batch_size) == expected
    rows = finetune_stage.batch_rows(num_clips, batch_size, seed=0)
    epoch = [next(rows) for _ in range(expected)]
    single_clip_batch = 1 if num_clips % batch_size == 1 else 0
    assert all(len(r) >= 2 for r in epoch) and len({int(i) for r in epoch for i in r}) == num_clips - single_clip_batch


def test_stopped_finetuning_resumes_exactly(tmp_path, small_weights, capsys):
    """A run stopped after 4 of 6 steps (mid-epoch 2, after epoch 1's validation) and rerun gives the scores
    and weights of an uninterrupted run; resuming with another learning rate is refused, naming it."""
    tasks = clip_task(tmp_path / "tasks" / "parity", "trainvaltest").parent
    config = json.loads(finetune_stage.DEFAULT_CONFIG.read_text())
    config["train"]["stop_after_steps"] = 4
    (tmp_path / "stop.json").write_text(json.dumps(config))
    stopped = tmp_path / "stopped"
    assert finetune.run(arguments(tasks, stopped, small_weights, config=tmp_path / "stop.json")) == 1
    assert "rerun the same command to resume" in capsys.readouterr().err and not (stopped / "scores.csv").exists()
    assert finetune.run(arguments(tasks, stopped, small_weights, lr=1e-3)) == 1
    assert "train.learning_rate: 0.0001 -> 0.001" in capsys.readouterr().err
    assert finetune.run(arguments(tasks, stopped, small_weights)) == 0
    assert finetune.run(arguments(tasks, tmp_path / "whole", small_weights)) == 0
    resumed, whole = (pd.read_csv(folder / "scores.csv") for folder in (stopped, tmp_path / "whole"))
    assert resumed[["score", "validation_score", "all_scores"]].equals(whole[["score", "validation_score", "all_scores"]])
    checkpoint = "checkpoints/parity/test/checkpoint.pt"
    resumed_state, whole_state = (torch.load(folder / checkpoint, weights_only=True) for folder in (stopped, tmp_path / "whole"))
    assert resumed_state["step"] == whole_state["step"] == 6
    assert_same(resumed_state["model"], whole_state["model"])  # weights, and the best epoch's kept weights


def assert_same(value, expected, where: str = "") -> None:
    """Nested dicts of tensors and numbers are equal, tensors bit for bit."""
    if isinstance(expected, dict):
        assert value.keys() == expected.keys(), where
        for key in expected:
            assert_same(value[key], expected[key], f"{where}.{key}")
    elif isinstance(expected, torch.Tensor):
        assert torch.equal(value, expected), where
    else:
        assert value == expected, where


def test_killed_finetuning_resumes_exactly(tmp_path, small_weights):
    """SIGKILL ``python -m eval finetune`` after its checkpoint at step 4 or later (of 24); rerunning the same
    command finishes with the scores and weights of an uninterrupted run."""
    tasks = clip_task(tmp_path / "tasks" / "parity", "trainvaltest").parent
    config = json.loads(finetune_stage.DEFAULT_CONFIG.read_text())
    config["train"].update(checkpoint_every=2, log_every=1)
    (tmp_path / "cfg.json").write_text(json.dumps(config))
    extra = {"config": tmp_path / "cfg.json", "epochs": 8}  # 12 training clips in batches of 4: 24 steps
    killed = tmp_path / "killed"
    command = [sys.executable, "-m", "eval", "finetune", "--tasks-dir", str(tasks), "--out", str(killed),
               "--weights", str(small_weights), "--config", str(tmp_path / "cfg.json"), "--epochs", "8",
               "--batch-size", "4", "--threads", "1", "--no-progress"]
    kill_after_logged_steps(command, killed / "checkpoints" / "parity" / "test" / "log.csv", steps=5)  # step 5 logged: checkpoint 4 written
    checkpoint = "checkpoints/parity/test/checkpoint.pt"
    assert 4 <= torch.load(killed / checkpoint, weights_only=True)["step"] < 24 and not (killed / "scores.csv").exists()
    assert finetune.run(arguments(tasks, killed, small_weights, **extra)) == 0
    assert finetune.run(arguments(tasks, tmp_path / "whole", small_weights, **extra)) == 0
    resumed, whole = (pd.read_csv(folder / "scores.csv") for folder in (killed, tmp_path / "whole"))
    assert resumed[["score", "validation_score", "all_scores"]].equals(whole[["score", "validation_score", "all_scores"]])
    assert_same(torch.load(killed / checkpoint, weights_only=True)["model"],
                torch.load(tmp_path / "whole" / checkpoint, weights_only=True)["model"])
