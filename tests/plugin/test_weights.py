"""Checkpoint reading and the loading door: parity with the reference fixtures, every accepted layout,
the full-size key sets of the manifest, config inference, and clear errors for wrong files."""
from __future__ import annotations

import pathlib
import sys
from dataclasses import asdict, replace

import pytest
import torch

from hear_embed import weights
from hear_embed.acoustic_model import AcousticModel
from hear_embed.checkpoint import (PREPROCESSOR_BUFFERS, check_state_dict, infer_acoustic_config,
                                   infer_classifier_configs, infer_tokenizer_config, read_state_dict)
from hear_embed.config import AcousticModelConfig, ClassificationDecoderConfig, TaskModelConfig, TokenizerConfig
from hear_embed.frontend import Frontend
from hear_embed.heads import HEARClassifier
from hear_embed.tokenizer import AcousticTokenizer
from hear_embed.weights import CheckpointError, load_acoustic_model, load_classifier, load_tokenizer, save_checkpoint

TOL = 1e-4
SMALL_FILES = {"acoustic_model": "acoustic_model_small.pth", "tokenizer": "tokenizer_small.pth"}
LOADERS = {"acoustic_model": load_acoustic_model, "tokenizer": load_tokenizer}
PREFIXES = ["module.", "model.", "encoder.", "acoustic_model.", "tokenizer.", "module.model."]


def _log_mel(reference, i: int) -> torch.Tensor:
    return Frontend()(torch.from_numpy(reference[f"clip{i}_waveform"])[None])


def _output(model, log_mel: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(log_mel)[0]


# --- parity with the reference outputs -------------------------------------------------------------------

@pytest.mark.parametrize("i", range(6))
def test_acoustic_model_fixture_reproduces_reference(parity_dir, reference, small_configs, i):
    model, info = load_acoustic_model(parity_dir / "acoustic_model_small.pth")
    assert not model.training and info.layout == "authors state_dict"
    assert info.config == AcousticModelConfig(**small_configs["AcousticModelConfig"])
    hidden = _output(model, _log_mel(reference, i))[0].numpy()
    assert abs(hidden - reference[f"clip{i}_hidden"]).max() < TOL


@pytest.mark.parametrize("i", [0, 1])  # the clips of at most 600 mel frames (6 s), the tokenizer's limit
def test_tokenizer_fixture_reproduces_reference(parity_dir, reference, small_configs, i):
    model, info = load_tokenizer(parity_dir / "tokenizer_small.pth")
    assert info.config == TokenizerConfig(**small_configs["TokenizerConfig"])
    logits = _output(model, _log_mel(reference, i))[0].numpy()
    assert abs(logits - reference[f"clip{i}_tokenizer_logits"]).max() < TOL


def test_tokenizer_reference_has_only_short_clips(reference):
    assert sorted(k for k in reference if k.endswith("_tokenizer_logits")) == [
        f"clip{i}_tokenizer_logits" for i in (0, 1)]


@pytest.mark.parametrize("i", range(6))
def test_classifier_fixture_reproduces_reference(parity_dir, reference, small_configs, i):
    model, info = load_classifier(parity_dir / "hear_classifier_small.pth")
    expected = (AcousticModelConfig(**small_configs["AcousticModelConfig"]),
                TaskModelConfig(**small_configs["TaskModelConfig"]),
                ClassificationDecoderConfig(**small_configs["ClassificationDecoderConfig"]))
    assert info.config == expected and not model.training
    with torch.no_grad():
        logits = model(torch.from_numpy(reference[f"clip{i}_waveform"])[None])[0].numpy()
    assert abs(logits - reference[f"clip{i}_logits"]).max() < TOL


def test_acoustic_model_taken_from_classifier(parity_dir, reference):
    classifier, _ = load_classifier(parity_dir / "hear_classifier_small.pth")
    model, info = load_acoustic_model(parity_dir / "hear_classifier_small.pth")
    assert info.layout.startswith("state_dict, prefix 'acoustic_model.'") and "ignored" in info.layout
    log_mel = _log_mel(reference, 4)  # three sliding windows
    assert torch.equal(_output(model, log_mel),
                       _output(classifier.acoustic_model, log_mel))


# --- every layout gives the same model -------------------------------------------------------------------

def _layouts() -> list[tuple[str, object]]:
    cases = [("raw", None)]
    cases += [(f"wrapped:{key}", key) for key in ("state_dict", "model", "model_state_dict", "module", "net")]
    cases += [(f"prefix:{prefix}", prefix) for prefix in PREFIXES]
    cases += [("lightning", None), ("project.pt", None), ("project.safetensors", None), ("safetensors", None)]
    return cases


def _write_layout(name: str, arg, state_dict: dict, model, directory: pathlib.Path) -> tuple[pathlib.Path, str]:
    """Write ``state_dict`` in layout ``name``; return the file and the layout WeightsInfo should report."""
    path = directory / ("w.safetensors" if name.endswith("safetensors") else "w.pth")
    if name == "raw":
        torch.save(state_dict, path)
        return path, "authors state_dict"
    if name.startswith("wrapped:"):
        torch.save({arg: state_dict, "epoch": 7, "optimizer": {"lr": 0.1}}, path)
        return path, f"wrapped under '{arg}'"
    if name.startswith("prefix:"):
        torch.save({arg + key: value for key, value in state_dict.items()}, path)
        return path, f"state_dict, prefix '{arg}'"
    if name == "lightning":  # Lightning: {"state_dict": {"model.<key>": ...}, "epoch": ...}
        torch.save({"state_dict": {"model." + k: v for k, v in state_dict.items()}, "epoch": 3}, path)
        return path, "wrapped under 'state_dict', prefix 'model.'"
    if name.startswith("project"):
        save_checkpoint(model, path, meta={"step": 12, "note": "test", "losses": [1.5, 0.5]})
        return path, "hear_embed v1" + (" (safetensors)" if name.endswith("safetensors") else "")
    from safetensors.torch import save_file
    save_file(state_dict, str(path))
    return path, "safetensors"


@pytest.mark.parametrize("kind", ["acoustic_model", "tokenizer"])
@pytest.mark.parametrize("name, arg", _layouts())
def test_every_layout_loads_the_same_model(parity_dir, reference, tmp_path, kind, name, arg):
    baseline, base_info = LOADERS[kind](parity_dir / SMALL_FILES[kind])
    path, layout = _write_layout(name, arg, baseline.state_dict(), baseline, tmp_path)
    model, info = LOADERS[kind](path)
    assert info.layout == layout and info.config == base_info.config and not model.training
    assert info.blob_id == weights.git_blob_sha1(path)
    if name.startswith("project"):
        assert info.meta == {"step": 12, "note": "test", "losses": [1.5, 0.5]}
    log_mel = _log_mel(reference, 0)
    assert torch.equal(_output(model, log_mel), _output(baseline, log_mel))
    assert read_state_dict(path, kind).keys() == baseline.state_dict().keys()


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_config_from_project_file_wins(tmp_path, suffix):
    config = AcousticModelConfig(hidden_size=16, intermediate_size=32, num_attention_heads=2,
                                 num_transformer_layers=1, max_length=40, overlap=8, dropout_probability=0.0)
    model = AcousticModel(config)
    save_checkpoint(model, tmp_path / f"m{suffix}")
    loaded, info = load_acoustic_model(tmp_path / f"m{suffix}")
    assert info.config == config  # inference alone would give overlap 39 and dropout 0.1
    assert infer_acoustic_config(loaded.state_dict()) == replace(config, overlap=39, dropout_probability=0.1)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))


@pytest.mark.parametrize("max_length, overlap", [(300, 50), (60, 50), (51, 50), (50, 49), (2, 1)])
def test_inferred_overlap_is_50_clamped_below_max_length(max_length, overlap):
    config = AcousticModelConfig(hidden_size=8, intermediate_size=8, num_attention_heads=2,
                                 num_transformer_layers=1, max_length=max_length, overlap=0)
    assert infer_acoustic_config(AcousticModel(config).state_dict()).overlap == overlap


# --- full-size configurations against the manifest -------------------------------------------------------

FULL_SIZE = {
    "acoustic_model": lambda: AcousticModel(AcousticModelConfig()),
    "tokenizer": lambda: AcousticTokenizer(TokenizerConfig()),
    "hear_classifier_50": lambda: HEARClassifier(AcousticModelConfig(), TaskModelConfig(),
                                                 ClassificationDecoderConfig(num_classes=50)),
}
PARAMETERS = {"acoustic_model": 11_445_888, "hear_classifier_50": 15_097_394}


@pytest.mark.parametrize("name", list(FULL_SIZE))
def test_full_size_key_set_and_shapes_match_manifest(manifest, name):
    model = FULL_SIZE[name]()
    ours = {key: list(value.shape) for key, value in model.state_dict().items()}
    theirs = {key: shape for key, shape in manifest[name].items() if key not in PREPROCESSOR_BUFFERS}
    assert ours == theirs
    if name in PARAMETERS:
        assert sum(p.numel() for p in model.parameters()) == PARAMETERS[name]
    if name == "hear_classifier_50":  # the three dropped buffers have the shapes of our Frontend's
        shapes = {"window": list(model.frontend.window.shape), "mel_fb": list(model.frontend.mel_fb.shape)}
        assert {k: manifest[name][k] for k in PREPROCESSOR_BUFFERS} == {k: shapes[v] for k, v in
                                                                        PREPROCESSOR_BUFFERS.items()}


def _manifest_state_dict(manifest, name: str) -> dict:
    return {key: torch.empty(shape, device="meta") for key, shape in manifest[name].items()}


def test_infer_paper_configs_from_manifest_shapes(manifest):
    assert infer_acoustic_config(_manifest_state_dict(manifest, "acoustic_model")) == AcousticModelConfig()
    assert infer_tokenizer_config(_manifest_state_dict(manifest, "tokenizer")) == TokenizerConfig()
    assert infer_classifier_configs(_manifest_state_dict(manifest, "hear_classifier_50")) == (
        AcousticModelConfig(), TaskModelConfig(), ClassificationDecoderConfig(num_classes=50))
    assert AcousticModelConfig() == AcousticModelConfig(**manifest["configs"]["AcousticModelConfig"])


def test_full_size_raw_file_round_trip(tmp_path):
    model, info = load_acoustic_model("random")
    torch.save(model.state_dict(), tmp_path / "full.pth")
    loaded, loaded_info = load_acoustic_model(tmp_path / "full.pth")
    assert loaded_info.config == AcousticModelConfig() == info.config
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))


def test_random_source_is_deterministic_and_leaves_global_rng_alone():
    state = torch.get_rng_state()
    first, info = load_acoustic_model("random")
    assert torch.equal(torch.get_rng_state(), state)
    second, _ = load_acoustic_model("random")
    torch.manual_seed(0)
    expected = AcousticModel(AcousticModelConfig())
    for a, b, c in zip(first.state_dict().values(), second.state_dict().values(), expected.state_dict().values()):
        assert torch.equal(a, b) and torch.equal(a, c)
    assert info.source == "random" and info.path is None and not first.training


def test_tiny_source_reads_the_packaged_file(tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "PACKAGED", tmp_path)
    with pytest.raises(FileNotFoundError, match="not built"):
        load_acoustic_model("tiny")
    config = AcousticModelConfig(hidden_size=8, intermediate_size=8, num_attention_heads=2,
                                 num_transformer_layers=1, max_length=20, overlap=5)
    save_checkpoint(AcousticModel(config), tmp_path / "tiny.pt", meta={"trained_on": "fsdd"})
    model, info = load_acoustic_model("tiny")
    assert info.source == "tiny" and info.config == config and info.meta == {"trained_on": "fsdd"}


# --- wrong files -----------------------------------------------------------------------------------------

class SideEffect:
    """Unpickling this would create a file: weights_only loading must refuse it before that happens."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return pathlib.Path.touch, (self.marker,)


def _edit(state_dict: dict, case: str) -> dict:
    state_dict = dict(state_dict)
    if case == "missing":
        del state_dict["contextual_encoder.layers.1.ffn.output_dense.bias"]
    elif case == "unexpected":
        state_dict["extra.weight"] = torch.zeros(3)
    elif case == "misshaped":
        state_dict["contextual_encoder.layers.0.layer_norm2.weight"] = torch.zeros(65)
    return state_dict


@pytest.mark.parametrize("case, message", [
    ("missing", "missing key 'contextual_encoder.layers.1.ffn.output_dense.bias'"),
    ("unexpected", "unexpected key 'extra.weight'"),
    ("misshaped", "key 'contextual_encoder.layers.0.layer_norm2.weight' has shape [65] in the file but [64]"),
])
def test_state_dict_that_does_not_fit_is_named(parity_dir, tmp_path, case, message):
    state_dict = torch.load(parity_dir / "acoustic_model_small.pth", weights_only=True)
    torch.save({"model": _edit(state_dict, case)}, tmp_path / "bad.pth")
    with pytest.raises(CheckpointError, match="bad.pth") as error:
        load_acoustic_model(tmp_path / "bad.pth")
    assert message in str(error.value)


def _bad_file(case: str, path: pathlib.Path, parity_dir: pathlib.Path) -> pathlib.Path:
    if case == "text":
        path.write_text("these are not weights\n")
    elif case == "pickle":
        torch.save({"weight": torch.zeros(2), "hook": SideEffect(path.with_name("executed"))}, path)
    elif case == "empty":
        torch.save({}, path)
    elif case == "no_tensors":
        torch.save({"epoch": 3, "model": {"name": "x"}}, path)
    elif case == "list":
        torch.save([torch.zeros(2)], path)
    elif case == "tensor":
        torch.save(torch.zeros(2), path)
    elif case == "unrelated":
        torch.save({"linear.weight": torch.zeros(2, 2)}, path)
    elif case == "directory":
        path.mkdir()
    elif case == "raw_tokenizer":  # its encoder sits under "encoder.", but "linear.*" is not ours to ignore
        path.write_bytes((parity_dir / "tokenizer_small.pth").read_bytes())
    elif case == "tokenizer":
        save_checkpoint(AcousticTokenizer(TokenizerConfig(hidden_size=8, intermediate_size=8, num_attention_heads=2,
                                                          num_transformer_layers=1, num_codebooks=4)), path)
    elif case == "future":
        torch.save({"format": "hear_embed", "format_version": 2, "state_dict": {"w": torch.zeros(1)}}, path)
    elif case == "bad_config":
        state_dict = torch.load(parity_dir / "acoustic_model_small.pth", weights_only=True)
        torch.save({"format": "hear_embed", "format_version": 1, "kind": "acoustic_model",
                    "config": {"hidden_size": 64, "depth": 2}, "state_dict": state_dict}, path)
    return path


@pytest.mark.parametrize("case, message", [
    ("text", "not a readable weights-only torch checkpoint"),
    ("pickle", "not a readable weights-only torch checkpoint"),
    ("empty", "holds an empty dict"),
    ("no_tensors", "no state_dict of tensors"),
    ("list", "holds a list"),
    ("tensor", "holds a Tensor"),
    ("unrelated", "no key ends in 'feature_extractor.conv.weight'"),
    ("directory", "directory"),
    ("raw_tokenizer", "unexpected key 'linear.weight' (and 1 more)"),
    ("tokenizer", "holds a hear_embed 'tokenizer' checkpoint"),
    ("future", "newer"),
    ("bad_config", "depth"),
])
def test_wrong_file_is_refused_with_its_name(tmp_path, parity_dir, case, message):
    path = _bad_file(case, tmp_path / "wrong.pth", parity_dir)
    with pytest.raises(CheckpointError, match="wrong.pth") as error:
        load_acoustic_model(path)
    assert message in str(error.value)
    assert not (tmp_path / "executed").exists()


def test_unknown_source_names_the_choices(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither 'authors', 'tiny', 'random'"):
        load_acoustic_model(tmp_path / "nowhere.pth")


@pytest.mark.parametrize("content", ["text", "missing_package"])
def test_safetensors_problems_are_named(tmp_path, monkeypatch, parity_dir, content):
    path = tmp_path / "w.safetensors"
    if content == "text":
        path.write_text("not safetensors")
        message = "not a readable safetensors file"
    else:
        from safetensors.torch import save_file
        save_file(torch.load(parity_dir / "acoustic_model_small.pth", weights_only=True), str(path))
        monkeypatch.setitem(sys.modules, "safetensors", None)
        message = "pip install safetensors"
    with pytest.raises(CheckpointError, match="w.safetensors") as error:
        load_acoustic_model(path)
    assert message in str(error.value)


@pytest.mark.parametrize("key", list(PREPROCESSOR_BUFFERS))
def test_classifier_preprocessor_buffers_must_match_our_frontend(parity_dir, tmp_path, key):
    state_dict = torch.load(parity_dir / "hear_classifier_small.pth", weights_only=True)
    state_dict[key] = state_dict[key] * 1.01
    torch.save(state_dict, tmp_path / "clf.pth")
    with pytest.raises(CheckpointError, match="clf.pth") as error:
        load_classifier(tmp_path / "clf.pth")
    assert key in str(error.value)


def test_check_state_dict_passes_manifest_shapes(manifest):
    state_dict = _manifest_state_dict(manifest, "acoustic_model")
    check_state_dict(AcousticModel(AcousticModelConfig()), state_dict)
    del state_dict["contextual_encoder.layers.5.ffn.output_dense.bias"]
    with pytest.raises(CheckpointError, match="missing key 'contextual_encoder.layers.5.ffn.output_dense.bias'"):
        check_state_dict(AcousticModel(AcousticModelConfig()), state_dict)


@pytest.mark.parametrize("meta, where", [({"path": pathlib.Path("x")}, "meta['path']"),
                                         ({"ok": [1, {"bad": torch.zeros(1)}]}, "meta['ok'][1]['bad']"),
                                         ({3: "x"}, "non-string key")])
def test_save_checkpoint_refuses_meta_that_is_not_plain(tmp_path, meta, where):
    model = AcousticModel(AcousticModelConfig(hidden_size=8, intermediate_size=8, num_attention_heads=2,
                                              num_transformer_layers=1, max_length=20, overlap=5))
    with pytest.raises(ValueError, match=None) as error:
        save_checkpoint(model, tmp_path / "m.pt", meta=meta)
    assert where in str(error.value) and not list(tmp_path.iterdir())


def test_project_file_holds_the_documented_fields(tmp_path):
    config = AcousticModelConfig(hidden_size=8, intermediate_size=8, num_attention_heads=2,
                                 num_transformer_layers=1, max_length=20, overlap=5)
    save_checkpoint(AcousticModel(config), tmp_path / "m.pt", meta={"seed": 1})
    saved = torch.load(tmp_path / "m.pt", weights_only=True)
    assert {k: saved[k] for k in ("format", "format_version", "kind", "config", "meta")} == {
        "format": "hear_embed", "format_version": 1, "kind": "acoustic_model", "config": asdict(config),
        "meta": {"seed": 1}}
    assert list(tmp_path.iterdir()) == [tmp_path / "m.pt"]  # no temporary file left behind


def test_random_tiny_source_is_the_tiny_architecture_untrained():
    """"random-tiny": the bundled model's config with seeded random weights (the fair random-init floor)."""
    tiny, tiny_info = load_acoustic_model("tiny")
    untrained, info = load_acoustic_model("random-tiny")
    assert info.config == tiny_info.config and info.source == "random-tiny" and info.path is None
    assert tiny.state_dict().keys() == untrained.state_dict().keys()
    assert not torch.equal(tiny.feature_extractor.conv.weight, untrained.feature_extractor.conv.weight)
    again, _ = load_acoustic_model("random-tiny")
    assert all(torch.equal(a, b) for a, b in zip(untrained.state_dict().values(), again.state_dict().values()))
