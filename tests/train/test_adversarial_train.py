"""Adversarial probes of the training pipeline: tampered, damaged or foreign checkpoints, changed configs,
invalid config files and non-finite losses each stop with a message naming the file, field or step (issue 14)."""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from hear_embed.train import checkpoints, tokenizer_stage
from hear_embed.train.checkpoints import TrainingError
from hear_embed.train.config_file import ConfigError
from hear_embed.train.runner import TrainConfig, train
from tests.builders.training import tokenizer_sections, write_config

STEPS = 4


def config_file(folder: Path, manifest: Path, **train) -> Path:
    sections = tokenizer_sections(manifest, **{"steps": STEPS, "checkpoint_every": 1, **train})
    return write_config(folder, "cfg.json", sections)


def model_state(out: Path) -> dict:
    return torch.load(out / checkpoints.CURRENT, weights_only=True)["model"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, manifest):
    """Final weights of an uninterrupted STEPS-step run."""
    folder = tmp_path_factory.mktemp("whole")
    assert tokenizer_stage.run(config_file(folder, manifest), folder / "out")["finished"]
    return model_state(folder / "out")


@pytest.fixture
def stopped_run(tmp_path, manifest) -> Path:
    """A run stopped after step 3: checkpoint.pt at step 3, checkpoint.prev.pt at step 2."""
    result = tokenizer_stage.run(config_file(tmp_path, manifest, stop_after_steps=3), tmp_path / "out")
    assert result["step"] == 3
    out = tmp_path / "out"
    assert torch.load(out / checkpoints.PREVIOUS, weights_only=True)["step"] == 2
    return out


class RunsShell:
    """Unpickling this calls os.system (what a tampered checkpoint would do)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def damage(path: Path, how: str) -> None:
    if how == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif how == "empty":
        path.write_bytes(b"")
    elif how == "random bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4096))
    elif how == "not a checkpoint dict":
        torch.save({"weights": torch.zeros(3)}, path)
    elif how == "missing":
        path.unlink()


def test_checkpoint_pickle_that_runs_code_is_refused(tmp_path, manifest):
    marker = tmp_path / "code_ran"
    out = tmp_path / "out"
    out.mkdir()
    torch.save({"model": RunsShell(marker), "step": 1}, out / checkpoints.CURRENT)
    with pytest.raises(TrainingError, match=r"checkpoint\.pt cannot be read .*other than tensors") as error:
        tokenizer_stage.run(config_file(tmp_path, manifest), out)
    assert str(out / checkpoints.CURRENT) in str(error.value)
    assert not marker.exists()


def test_rng_states_survive_a_weights_only_round_trip(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.standard_normal()  # leaves a cached Gaussian in numpy's state
    torch.save(checkpoints.rng_state(), tmp_path / "rng.pt")
    expected = (torch.rand(3), np.random.standard_normal(3), random.random())
    torch.manual_seed(9), np.random.seed(9), random.seed(9)
    checkpoints.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert torch.equal(torch.rand(3), expected[0])
    assert np.array_equal(np.random.standard_normal(3), expected[1]) and random.random() == expected[2]


@pytest.mark.parametrize("how", ["truncated", "empty", "random bytes", "not a checkpoint dict", "missing"])
def test_damaged_checkpoint_falls_back_to_the_previous_one(stopped_run, manifest, uninterrupted, how):
    damage(stopped_run / checkpoints.CURRENT, how)
    if how != "missing":
        with pytest.raises(TrainingError, match=r"checkpoint\.pt (cannot be read|lacks|holds)") as error:
            checkpoints.read(stopped_run / checkpoints.CURRENT)
        assert "other than tensors" not in str(error.value)  # damage is not reported as tampering
    with pytest.warns(UserWarning, match=r"checkpoint\.pt.*resuming from the previous checkpoint .*checkpoint\.prev\.pt \(step 2\)"):
        result = tokenizer_stage.run(config_file(stopped_run.parent, manifest), stopped_run)
    assert result["finished"] and result["step"] == STEPS
    resumed = model_state(stopped_run)
    for key, value in uninterrupted.items():  # resuming from step 2 still gives the uninterrupted weights
        assert torch.equal(resumed[key], value), key
    assert torch.load(stopped_run / checkpoints.PREVIOUS, weights_only=True)["step"] == STEPS - 1


def test_damaged_current_does_not_replace_the_good_previous_one(stopped_run, manifest):
    """The first save after a fallback overwrites the damaged file instead of rotating it onto checkpoint.prev.pt."""
    damage(stopped_run / checkpoints.CURRENT, "random bytes")
    with pytest.warns(UserWarning, match="previous checkpoint"):
        tokenizer_stage.run(config_file(stopped_run.parent, manifest, stop_after_steps=1), stopped_run)
    assert torch.load(stopped_run / checkpoints.CURRENT, weights_only=True)["step"] == 3
    assert torch.load(stopped_run / checkpoints.PREVIOUS, weights_only=True)["step"] == 2


def test_two_damaged_checkpoints_are_named(stopped_run, manifest):
    damage(stopped_run / checkpoints.CURRENT, "empty")
    damage(stopped_run / checkpoints.PREVIOUS, "truncated")
    with pytest.raises(TrainingError, match=r"no usable checkpoint.*checkpoint\.pt.*checkpoint\.prev\.pt.*Delete them"):
        tokenizer_stage.run(config_file(stopped_run.parent, manifest), stopped_run)


def test_folder_in_place_of_checkpoint_is_named(tmp_path, manifest):
    (tmp_path / "out" / checkpoints.CURRENT).mkdir(parents=True)
    with pytest.raises(TrainingError, match=r"checkpoint\.pt is a folder"):
        tokenizer_stage.run(config_file(tmp_path, manifest), tmp_path / "out")


@pytest.mark.parametrize("section,field,value,message", [
    ("train", "learning_rate", 1e-3, r"train\.learning_rate: 0\.003 -> 0\.001"),
    ("train", "seed", 5, r"train\.seed: 0 -> 5"),
    ("tokenizer", "hidden_size", 24, r"tokenizer\.hidden_size: 16 -> 24"),
    ("data", "crop_seconds", 0.3, r"data\.crop_seconds: 0\.35 -> 0\.3"),
])
def test_resuming_with_a_changed_config_names_the_change(stopped_run, manifest, section, field, value, message):
    sections = tokenizer_sections(manifest, steps=STEPS, checkpoint_every=1)
    sections[section][field] = value
    with pytest.raises(TrainingError, match=r"checkpoint\.pt was written with another configuration \(" + message):
        tokenizer_stage.run(write_config(stopped_run.parent, "changed.json", sections), stopped_run)


def test_more_steps_and_another_budget_may_resume(stopped_run, manifest):
    config = config_file(stopped_run.parent, manifest, steps=STEPS + 1, max_wall_seconds=600, log_every=2)
    assert tokenizer_stage.run(config, stopped_run)["step"] == STEPS + 1


class NaNAtCall(nn.Module):
    """Toy stage: squared distance of a parameter to the batch's target; the loss is NaN on call ``bad_call``."""

    def __init__(self, bad_call: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(3))
        self.bad_call, self.calls = bad_call, 0

    def forward(self, batch: dict) -> dict[str, torch.Tensor]:
        self.calls += 1
        distance = ((self.weight - batch["target"]) ** 2).sum()
        loss = distance * float("nan") if self.calls == self.bad_call else distance
        return {"loss": loss, "distance": distance.detach()}


def constant_batches(start_step: int, rank: int, world_size: int):
    while True:
        yield {"target": torch.ones(3)}


def test_non_finite_loss_stops_before_updating_and_keeps_the_checkpoint(tmp_path):
    exported = []
    stage = NaNAtCall(bad_call=5)
    config = TrainConfig(steps=10, micro_batch=1, learning_rate=0.1, warmup_steps=1, checkpoint_every=2, log_every=1)
    with pytest.raises(TrainingError, match=r"not finite at step 5 \(loss=nan, distance=[0-9.]+.*step 4\) is kept, nothing exported"):
        train(stage, constant_batches, config, tmp_path, export=lambda *args: exported.append(args))
    assert not exported
    state = torch.load(tmp_path / checkpoints.CURRENT, weights_only=True)
    assert state["step"] == 4 and len((tmp_path / "log.csv").read_text().splitlines()) == 1 + 4
    assert torch.isfinite(stage.weight).all()


def test_non_finite_loss_exits_non_zero_without_export(tmp_path, manifest, capsys):
    config = config_file(tmp_path, manifest, steps=6, learning_rate=1e30, grad_clip=0.0)  # diverges at step 2
    assert tokenizer_stage.main(["--config", str(config), "--out-dir", str(tmp_path / "out")]) == 1
    assert "loss is not finite at step 2 (loss=nan" in capsys.readouterr().err
    assert not (tmp_path / "out" / "tokenizer.pt").exists()
    assert torch.load(tmp_path / "out" / checkpoints.CURRENT, weights_only=True)["step"] == 1


@pytest.mark.parametrize("text,message", [
    ("{not json", r"cfg\.json is not valid JSON"),
    ("[1, 2]", r"cfg\.json must hold a JSON object of sections, got a list"),
    ('{"train": [1]}', r"cfg\.json: section 'train' must be a JSON object"),
    ('{"train": {"steps": "ten"}}', r"cfg\.json: train\.steps must be an integer, got 'ten'"),
    ('{"train": {"learning_rate": true}}', r"cfg\.json: train\.learning_rate must be a number, got True"),
    ('{"data": {"sources": "audio/"}}', r"cfg\.json: data\.sources must be a list, got 'audio/'"),
    ('{"loss": {"temperature_decay": null}}', r"cfg\.json: loss\.temperature_decay must be a number, got None"),
    ('{"train": {"steps": 0}}', r"cfg\.json, section 'train': steps must be at least 1"),
])
def test_invalid_config_names_file_and_field(tmp_path, text, message, capsys):
    (tmp_path / "cfg.json").write_text(text)
    with pytest.raises(ConfigError, match=message):
        tokenizer_stage.run(tmp_path / "cfg.json", tmp_path / "out")
    assert tokenizer_stage.main(["--config", str(tmp_path / "cfg.json"), "--out-dir", str(tmp_path / "out")]) == 1
    assert "cfg.json" in capsys.readouterr().err


def test_checkpoint_folder_holds_two_checkpoints_and_the_log_only(stopped_run):
    """Saves rotate checkpoint.pt to checkpoint.prev.pt and leave no temporary file behind."""
    assert sorted(p.name for p in stopped_run.iterdir()) == sorted(["checkpoint.pt", "checkpoint.prev.pt", "log.csv"])
