"""Stages 1 and 2 on real audio: losses fall, the exported files load, runs resume exactly, teachers plug in."""
from __future__ import annotations

import csv
import sys

import pytest
import torch

from hear_embed.config import DecoderConfig, TokenizerConfig
from hear_embed.tokenizer import AcousticTokenizer
from hear_embed.train import mam_stage, tokenizer_stage
from hear_embed.train.decoder import Decoder, GumbelQuantizer
from hear_embed.train.masking import frame_mask
from hear_embed.weights import load_acoustic_model, load_tokenizer, save_checkpoint
from tests.builders.training import kill_after_logged_steps, mam_sections, tokenizer_sections, training_clips, write_config, write_manifest


@pytest.fixture(scope="module")
def random_tokenizer(tmp_path_factory):
    torch.manual_seed(0)
    config = TokenizerConfig(hidden_size=16, intermediate_size=32, num_attention_heads=2, num_transformer_layers=1,
                             num_codebooks=16)
    return save_checkpoint(AcousticTokenizer(config), tmp_path_factory.mktemp("tok") / "tokenizer.pt")


def run_stage(stage: str, folder, manifest, tokenizer=None, **train):
    """Train ``stage`` ("tokenizer" or "mam") in this process; returns (result, log rows)."""
    if stage == "tokenizer":
        config = write_config(folder, "cfg.json", tokenizer_sections(manifest, **train))
        result = tokenizer_stage.run(config, folder / "out")
    else:
        config = write_config(folder, "cfg.json", mam_sections(manifest, **train))
        result = mam_stage.run(config, folder / "out", tokenizer)
    with (folder / "out" / "log.csv").open() as handle:
        return result, list(csv.DictReader(handle))


def model_state(folder) -> dict:
    return torch.load(folder / "out" / "checkpoint.pt", weights_only=True)["model"]


@pytest.mark.parametrize("stage", ["tokenizer", "mam"])
def test_loss_decreases_and_export_loads(tmp_path, manifest, random_tokenizer, stage):
    result, rows = run_stage(stage, tmp_path, manifest, random_tokenizer, steps=12, micro_batch=8)
    losses = [float(row["loss"]) for row in rows]
    assert result["finished"] and len(losses) == 12
    assert sum(losses[-3:]) / 3 < 0.9 * sum(losses[:3]) / 3, losses
    if stage == "tokenizer":
        model, info = load_tokenizer(str(tmp_path / "out" / "tokenizer.pt"))
        assert info.meta["steps"] == 12 and model.config.num_codebooks == 16
        assert float(rows[-1]["temperature"]) == pytest.approx(2.0 * 0.9 ** 12, rel=1e-4)
    else:
        model, info = load_acoustic_model(str(tmp_path / "out" / "acoustic_model.pt"))
        assert info.meta["stage"] == "masked_audio_modeling" and model.config.hidden_size == 16


@pytest.mark.parametrize("stage", ["tokenizer", "mam"])
def test_stopped_run_resumes_exactly(tmp_path, manifest, random_tokenizer, stage):
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    _, full_rows = run_stage(stage, tmp_path / "a", manifest, random_tokenizer, steps=4)
    first, _ = run_stage(stage, tmp_path / "b", manifest, random_tokenizer, steps=4, stop_after_steps=3)
    assert first["step"] == 3 and not first["finished"]
    assert not any((tmp_path / "b" / "out").glob("*model.pt")) and not (tmp_path / "b" / "out" / "tokenizer.pt").exists()
    second, rows = run_stage(stage, tmp_path / "b", manifest, random_tokenizer, steps=4)
    assert second["step"] == 4 and second["finished"]
    full, resumed = model_state(tmp_path / "a"), model_state(tmp_path / "b")
    assert full.keys() == resumed.keys()
    for key in full:
        assert torch.equal(full[key], resumed[key]), key
    assert [row["loss"] for row in rows] == [row["loss"] for row in full_rows]


def test_killed_process_resumes_exactly(tmp_path, manifest):
    """SIGKILL a training process mid-run (after its checkpoint at step 4 or later, of 24); rerunning the same
    config finishes with exactly the weights of an uninterrupted run (lost steps are redone, the log is trimmed)."""
    config = write_config(tmp_path, "cfg.json", tokenizer_sections(manifest, steps=24, checkpoint_every=4))
    command = [sys.executable, "-m", "hear_embed.train.tokenizer_stage", "--config", str(config),
               "--out-dir", str(tmp_path / "killed")]
    log = tmp_path / "killed" / "log.csv"
    kill_after_logged_steps(command, log, steps=5)  # step 5 logged: checkpoint 4 written
    state = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)
    assert state["step"] % 4 == 0 and 4 <= state["step"] < 24
    assert tokenizer_stage.run(config, tmp_path / "killed")["finished"]  # the same run, resumed in this process
    uninterrupted = tmp_path / "whole"
    uninterrupted.mkdir()
    run_stage("tokenizer", uninterrupted, manifest, steps=24, checkpoint_every=4)
    killed = torch.load(tmp_path / "killed" / "checkpoint.pt", weights_only=True)["model"]
    for key, value in model_state(uninterrupted).items():
        assert torch.equal(value, killed[key]), key
    assert len(log.read_text().splitlines()) == 1 + 24


def test_hear_module_teacher_distillation(tmp_path, manifest, monkeypatch):
    """A HEAR-API module imported by name provides 8-dim targets at 4 Hz, interpolated to 50 Hz frames."""
    (tmp_path / "toy_hear_teacher.py").write_text(
        "import torch\n"
        "class Model(torch.nn.Module):\n"
        "    sample_rate = 16000\n"
        "def load_model(model_file=''):\n"
        "    return Model()\n"
        "def get_timestamp_embeddings(audio, model):\n"
        "    frames = audio.unfold(1, 4000, 4000)\n"
        "    emb = torch.stack([frames.std(-1), frames.abs().amax(-1)] * 4, dim=-1)\n"
        "    times = (torch.arange(frames.shape[1]) * 250.0 + 125.0).expand(audio.shape[0], -1)\n"
        "    return emb, times\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    sections = tokenizer_sections(manifest, steps=10, micro_batch=8)
    sections["loss"]["distillation_weight"] = 0.7
    sections["teacher"] = {"kind": "hear_module", "module": "toy_hear_teacher"}
    result = tokenizer_stage.run(write_config(tmp_path, "cfg.json", sections), tmp_path / "out")
    with (tmp_path / "out" / "log.csv").open() as handle:
        distillation = [float(row["distillation"]) for row in csv.DictReader(handle)]
    assert result["finished"] and all(value > 0 for value in distillation)
    assert distillation[-1] < distillation[0]


def test_unreadable_file_does_not_stop_training(tmp_path):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF\x00\x00 truncated")
    manifest = write_manifest(tmp_path, training_clips(3) + [broken])
    with pytest.warns(UserWarning, match="broken.wav"):
        result, rows = run_stage("tokenizer", tmp_path, manifest, steps=2, micro_batch=4)
    assert result["finished"] and result["skipped_files"] >= 1 and int(rows[-1]["skipped_files"]) >= 1


def test_distillation_without_teacher_is_refused(tmp_path, manifest):
    sections = tokenizer_sections(manifest)
    sections["loss"]["distillation_weight"] = 0.7
    with pytest.raises(ValueError, match="needs a teacher"):
        tokenizer_stage.run(write_config(tmp_path, "cfg.json", sections), tmp_path / "out")


def test_unknown_config_key_is_named(tmp_path, manifest):
    sections = tokenizer_sections(manifest)
    sections["train"]["stepz"] = 3
    with pytest.raises(ValueError, match="stepz"):
        tokenizer_stage.run(write_config(tmp_path, "cfg.json", sections), tmp_path / "out")


@pytest.mark.parametrize("lengths", [[50, 37, 1], [300, 120, 299]])
def test_exact_mask_hides_the_configured_fraction(lengths):
    lengths = torch.tensor(lengths)
    mask = frame_mask(lengths, int(lengths.max()), 0.4, torch.arange(3), "exact")
    assert mask.sum(dim=1).tolist() == [max(1, round(0.4 * n)) for n in lengths.tolist()]
    assert not mask[torch.arange(mask.shape[1])[None] >= lengths[:, None]].any()
    assert torch.equal(mask, frame_mask(lengths, int(lengths.max()), 0.4, torch.arange(3), "exact"))


def test_reference_mask_hides_about_two_thirds():
    lengths = torch.full((64,), 200)
    lengths[32:] = 100
    mask = frame_mask(lengths, 200, 0.4, torch.arange(64), "reference")
    valid = torch.arange(200)[None] < lengths[:, None]
    assert mask[valid].float().mean().item() == pytest.approx(0.655, abs=0.02)  # P(N(0,1) < 0.4)
    assert mask[~valid].float().mean().item() == pytest.approx(0.274, abs=0.03)  # P(N(0,1) < -0.6)


def test_decoder_and_quantizer_layout():
    """Parameter names and shapes of the reference's Decoder / OutLayer / GumbelVectorQuantizer."""
    config = DecoderConfig(hidden_size=16, intermediate_size=32, num_attention_heads=2, num_transformer_layers=2,
                           knowledge_hidden_size=24, code_vector_size=8)
    shapes = {k: tuple(v.shape) for k, v in Decoder(config).state_dict().items()}
    assert shapes["layers.1.self_attn.linear_q.weight"] == (16, 16)
    assert shapes["layers.0.ffn.intermediate_dense.weight"] == (32, 16)
    assert shapes["out_layer.out_linear.weight"] == (256, 16) and shapes["out_layer.out_linear2.weight"] == (24, 16)
    assert {"out_layer.linear.weight", "out_layer.layer_norm.weight"} <= shapes.keys()
    quantizer = GumbelQuantizer(num_codes=32, code_vector_size=8, hidden_size=16)
    assert tuple(quantizer.code_book.shape) == (1, 32, 8) and tuple(quantizer.linear.weight.shape) == (16, 8)
    hidden, diversity = quantizer(torch.randn(2, 5, 32), torch.tensor([5, 3]), torch.tensor([1, 2]))
    assert hidden.shape == (2, 5, 16) and diversity.item() >= 0
