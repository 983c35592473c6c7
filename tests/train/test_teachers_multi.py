"""Several teachers in stage 1: the two target layouts (heads, concatenated), their losses, and the logged columns."""
from __future__ import annotations

import csv

import pytest
import torch
from torch import nn

from hear_embed.train import mam_stage, tokenizer_stage
from hear_embed.train.teachers import TeacherSet, build_teacher
from hear_embed.train.tokenizer_stage import distillation_losses
from tests.builders.paths import REPO
from tests.builders.training import mam_sections, tokenizer_sections, training_clips, write_config, write_manifest

TOY_TEACHER = (
    "import torch\n"
    "class Model(torch.nn.Module):\n"
    "    sample_rate = 16000\n"
    "def load_model(model_file=''):\n"
    "    return Model()\n"
    "def get_timestamp_embeddings(audio, model):\n"
    "    frames = audio.unfold(1, 800, 800)\n"
    "    emb = torch.stack([frames.std(-1), frames.abs().amax(-1), frames.mean(-1)] * {repeat}, dim=-1)\n"
    "    times = (torch.arange(frames.shape[1]) * 50.0 + 25.0).expand(audio.shape[0], -1)\n"
    "    return emb, times\n")


@pytest.fixture
def toy_teachers(tmp_path, monkeypatch):
    """Two HEAR-API toy modules with 6 and 9 features per frame; -> a "multi" spec builder."""
    for name, repeat in (("toy_teacher_a", 2), ("toy_teacher_b", 3)):
        (tmp_path / f"{name}.py").write_text(TOY_TEACHER.replace("{repeat}", str(repeat)))
    monkeypatch.syspath_prepend(str(tmp_path))
    return lambda target: {"kind": "multi", "target": target, "teachers": {
        "a": {"kind": "hear_module", "module": "toy_teacher_a"},
        "b": {"kind": "hear_module", "module": "toy_teacher_b", "weight": 3.0}}}


def known_targets():
    generator = torch.Generator().manual_seed(0)
    targets = [torch.randn(2, 5, 4, generator=generator), torch.randn(2, 5, 3, generator=generator)]
    valid = torch.tensor([[True] * 5, [True, True, True, False, False]])
    return targets, valid


def test_heads_loss_is_the_weighted_mean_of_each_teachers_cosine_loss():
    targets, valid = known_targets()
    predictions = [3.0 * targets[0], -targets[1]]  # a: same direction (loss 0); b: opposite (loss 2)
    loss, each = distillation_losses(predictions, targets, valid, ["a", "b"], [1.0, 3.0], concatenated=False)
    assert float(each["distillation_a"]) == pytest.approx(0.0, abs=1e-6)
    assert float(each["distillation_b"]) == pytest.approx(2.0, abs=1e-6)
    assert float(loss) == pytest.approx((0.0 * 1 + 2.0 * 3) / 4, abs=1e-6)


def test_concatenated_target_normalizes_and_weights_each_teacher():
    targets, valid = known_targets()
    unit = [nn.functional.normalize(target, dim=-1) for target in targets]
    perfect = torch.cat([0.5 * unit[0], 0.75 ** 0.5 * unit[1]], dim=-1)  # weights 1 and 3 of 4
    loss, each = distillation_losses([7.0 * perfect], targets, valid, ["a", "b"], [1.0, 3.0], concatenated=True)
    assert float(loss) == pytest.approx(0.0, abs=1e-6)
    flipped = torch.cat([0.5 * unit[0], -(0.75 ** 0.5) * unit[1]], dim=-1)  # cos = 1/4 - 3/4
    loss, each = distillation_losses([flipped], targets, valid, ["a", "b"], [1.0, 3.0], concatenated=True)
    assert float(loss) == pytest.approx(1.5, abs=1e-6)
    assert (float(each["distillation_a"]), float(each["distillation_b"])) == pytest.approx((0.0, 2.0), abs=1e-6)


@pytest.mark.parametrize("target, knowledge", [("heads", 8), ("concatenated", 15)])
def test_two_teachers_train_and_log_each_loss(tmp_path, toy_teachers, target, knowledge):
    manifest = write_manifest(tmp_path, training_clips(8))
    sections = tokenizer_sections(manifest, steps=6, micro_batch=8)
    sections["loss"]["distillation_weight"] = 0.7
    sections["decoder"]["knowledge_hidden_size"] = knowledge
    sections["teacher"] = toy_teachers(target)
    result = tokenizer_stage.run(write_config(tmp_path, "cfg.json", sections), tmp_path / "out")
    with (tmp_path / "out" / "log.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert result["finished"] and len(rows) == 6
    for row in rows:
        assert 0 < float(row["distillation_a"]) < 2 and 0 < float(row["distillation_b"]) < 2
        assert 1 <= float(row["code_perplexity"]) <= float(row["codes_used"]) <= 16
    assert float(rows[-1]["distillation"]) < float(rows[0]["distillation"])


def test_decoder_gets_one_head_per_teacher(toy_teachers):
    teacher = build_teacher(toy_teachers("heads"))
    assert isinstance(teacher, TeacherSet) and teacher.feature_sizes == {"a": 6, "b": 9}
    sections = tokenizer_sections(manifest=None)
    from hear_embed.config import DecoderConfig, TokenizerConfig

    stage = tokenizer_stage.TokenizerStage(TokenizerConfig(**sections["tokenizer"]), DecoderConfig(**sections["decoder"]),
                                           tokenizer_stage.TokenizerLossConfig(), teacher)
    assert [head.out_features for head in stage.decoder.out_layer.teacher_heads] == [6, 9]
    assert not hasattr(stage.decoder.out_layer, "out_linear2")


def test_concatenated_target_of_the_wrong_width_is_named(toy_teachers):
    from hear_embed.config import DecoderConfig, TokenizerConfig

    sections = tokenizer_sections(manifest=None)
    with pytest.raises(ValueError, match=r"knowledge_hidden_size is 8, but the teachers' features add up to 15"):
        tokenizer_stage.TokenizerStage(TokenizerConfig(**sections["tokenizer"]), DecoderConfig(**sections["decoder"]),
                                       tokenizer_stage.TokenizerLossConfig(), build_teacher(toy_teachers("concatenated")))


@pytest.mark.parametrize("spec, message", [
    ({"kind": "multi", "teachers": [{"kind": "crepe"}]}, "must map names"),
    ({"kind": "multi", "teachers": {}}, "at least one teacher"),
    ({"kind": "multi", "target": "sum", "teachers": {"a": {"kind": "hear_module", "module": "toy_teacher_a"}}}, "target must be"),
    ({"kind": "multi", "teachers": {"a": {"kind": "hear_module", "module": "toy_teacher_a", "weight": 0}}}, "positive"),
])
def test_bad_multi_teacher_specs_are_named(toy_teachers, spec, message):
    with pytest.raises(ValueError, match=message):
        build_teacher(spec)


def test_mam_log_has_the_embedding_participation_ratio(tmp_path):
    manifest = write_manifest(tmp_path, training_clips(8))
    torch.manual_seed(0)
    from hear_embed.config import TokenizerConfig
    from hear_embed.tokenizer import AcousticTokenizer
    from hear_embed.weights import save_checkpoint

    tokenizer = save_checkpoint(AcousticTokenizer(TokenizerConfig(hidden_size=16, intermediate_size=32, num_attention_heads=2,
                                                                  num_transformer_layers=1, num_codebooks=16)),
                                tmp_path / "tokenizer.pt")
    mam_stage.run(write_config(tmp_path, "mam.json", mam_sections(manifest, steps=2, micro_batch=8)), tmp_path / "out", tokenizer)
    with (tmp_path / "out" / "log.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert all(1.0 <= float(row["embedding_participation"]) <= 16.0 for row in rows)  # hidden size 16


def test_tiny2_configs_parse_and_name_four_teachers():
    from hear_embed.train.config_file import read_sections

    configs = REPO / "hear_embed" / "train" / "configs"
    stage1 = read_sections(configs / "tiny2_tokenizer.json", tokenizer_stage.SECTIONS, extra=("teacher",))
    stage2 = read_sections(configs / "tiny2_mam.json", mam_stage.SECTIONS)
    teacher = stage1["teacher"]
    assert teacher["kind"] == "multi" and teacher["target"] in ("heads", "concatenated")
    assert {member["kind"] for member in teacher["teachers"].values()} == {"crepe", "resemblyzer", "silero_vad", "basic_pitch"}
    assert stage1["decoder"].knowledge_hidden_size == 256 + 256 + 128 + 440  # the concatenated width, for the ablation
    shipped = read_sections(configs / "tiny_mam.json", mam_stage.SECTIONS)["acoustic_model"]
    assert stage2["acoustic_model"] == shipped  # same architecture as the shipped tiny: scores compare
    assert stage1["data"].sources == stage2["data"].sources
