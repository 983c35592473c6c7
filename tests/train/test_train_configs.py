"""The shipped training configs parse into their stages' sections, and the tiny ones match the bundled checkpoint."""
from __future__ import annotations

import pytest

from hear_embed.train import finetune_stage, mam_stage, tokenizer_stage
from hear_embed.config import config_to_dict
from hear_embed.train.config_file import read_sections
from hear_embed.weights import load_acoustic_model, load_tokenizer
from tests.builders.paths import REPO

CONFIGS = REPO / "hear_embed" / "train" / "configs"


@pytest.mark.parametrize("name", ["tiny_tokenizer.json", "paper_tokenizer.json"])
def test_tokenizer_configs_parse(name):
    sections = read_sections(CONFIGS / name, tokenizer_stage.SECTIONS, extra=("teacher",))
    loss = sections["loss"]
    assert (loss.reconstruction_weight, loss.distillation_weight) == (0.3, 0.7)
    assert loss.diversity_weight == (0.1 if name.startswith("paper") else 2.0)  # tiny: see MODEL_CARD.md
    assert sections["teacher"]["kind"] in {"crepe", "ssast"}
    assert sections["data"].crop_seconds <= 6.0


@pytest.mark.parametrize("name", ["tiny_mam.json", "paper_mam.json"])
def test_mam_configs_parse(name):
    sections = read_sections(CONFIGS / name, mam_stage.SECTIONS)
    assert sections["mask"].rate == 0.4 and sections["mask"].mode == "exact"


def test_bundled_tiny_checkpoint_was_trained_with_the_shipped_configs():
    tokenizer_sections = read_sections(CONFIGS / "tiny_tokenizer.json", tokenizer_stage.SECTIONS, extra=("teacher",))
    mam_sections = read_sections(CONFIGS / "tiny_mam.json", mam_stage.SECTIONS)
    model, model_info = load_acoustic_model("tiny")
    tokenizer, tokenizer_info = load_tokenizer("tiny")
    assert model.config == mam_sections["acoustic_model"]
    assert tokenizer.config == tokenizer_sections["tokenizer"]
    assert tokenizer_info.meta["loss"] == config_to_dict(tokenizer_sections["loss"])
    assert tokenizer_info.meta["teacher"] == tokenizer_sections["teacher"]
    assert tokenizer_info.meta["steps"] == tokenizer_sections["train"].steps
    assert model_info.meta["steps"] == mam_sections["train"].steps
    assert model_info.meta["mask"] == config_to_dict(mam_sections["mask"])
    assert model_info.meta["data_sources"] == list(mam_sections["data"].sources)


def test_finetune_config_parses_to_the_protocol_defaults():
    sections = finetune_stage.read_config()  # configs/finetune.json
    train, options = sections["train"], sections["finetune"]
    assert (train.micro_batch, train.learning_rate, options.head_learning_rate, options.epochs) == (16, 1e-4, 1e-3, 10)
    assert (train.warmup_steps, train.grad_clip, train.precision, train.accumulation) == (0, 0.0, "fp32", 1)
