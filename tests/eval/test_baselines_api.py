"""Every baseline module behaves as a HEAR module should: batch invariance, long audio through windows equal to
the window's own encoding, the ``layer`` option, scene sizes, clear errors, and the real hear-validator.

Each module is built from a small random model through its real loading path (a ``save_pretrained`` folder, or a
checkpoint file in the official layout).
"""
from __future__ import annotations

import argparse
import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from eval.baselines import audiomae, beats, common
from tests.builders.baselines import small_folder
from tests.builders.paths import REPO

MODULES = ["wav2vec2", "hubert", "wavlm", "data2vec_audio", "ast", "beats", "audiomae"]
SMALL_BEATS = beats.BEATsConfig(embed_dim=32, encoder_layers=2, encoder_embed_dim=32, encoder_ffn_embed_dim=64,
                                encoder_attention_heads=2, deep_norm=True, conv_pos=16, conv_pos_groups=2,
                                relative_position_embedding=True, num_buckets=32, max_distance=64, gru_rel_pos=True)


def _save_beats(path: Path) -> Path:
    """A small random BEATs checkpoint in the official layout (per-layer bias copies, weight_g / weight_v)."""
    torch.manual_seed(0)
    state = {}
    for key, value in beats.BEATsEncoder(SMALL_BEATS).state_dict().items():
        key = key.replace("parametrizations.weight.original0", "weight_g").replace("parametrizations.weight.original1",
                                                                                 "weight_v")
        if key == "relative_attention_bias.weight":
            for layer in range(SMALL_BEATS.encoder_layers):
                state[f"encoder.layers.{layer}.self_attn.relative_attention_bias.weight"] = value
            continue
        state[key] = value + 0.05 * torch.randn_like(value)
    torch.save({"cfg": SMALL_BEATS.__dict__, "model": state}, path)
    return path


def _save_audiomae(path: Path) -> Path:
    """A small random AudioMAE checkpoint as the training script saves it (decoder keys, an argparse Namespace)."""
    torch.manual_seed(0)
    encoder = audiomae.AudioMAEEncoder(width=64, depth=2, mlp_width=128)
    state = {key: value + 0.05 * torch.randn_like(value) for key, value in encoder.state_dict().items()}
    state["decoder_embed.weight"] = torch.zeros(8, 64)
    torch.save({"model": state, "args": argparse.Namespace(model="mae_vit_base_patch16")}, path)
    return path


def weights_for(name: str, folder: Path) -> Path:
    if name == "beats":
        return _save_beats(folder / "beats.pt")
    if name == "audiomae":
        return _save_audiomae(folder / "audiomae.pth")
    if name == "ast":
        import transformers

        torch.manual_seed(0)
        config = transformers.ASTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
        transformers.ASTModel(config).save_pretrained(folder / "ast")
        return folder / "ast"
    return small_folder(name, folder / name)[0]


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("baseline_weights")
    return {name: weights_for(name, folder) for name in MODULES}


def _load(name: str, weights, **options):
    module = importlib.import_module(f"eval.baselines.{name}")
    return module, module.load_model(str(weights[name]), **options)


def _audio(n: int, seconds: float, seed: int = 0) -> torch.Tensor:
    return 0.1 * torch.randn(n, int(seconds * 16000), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", MODULES)
def test_batch_invariance_and_sizes(name, weights):
    module, model = _load(name, weights)
    audio = _audio(3, 2.0)
    embeddings, timestamps = module.get_timestamp_embeddings(audio, model)
    alone, _ = module.get_timestamp_embeddings(audio[1:2], model)
    assert embeddings.dtype == torch.float32 and timestamps.shape == embeddings.shape[:2]
    assert embeddings.shape[2] == model.timestamp_embedding_size
    torch.testing.assert_close(alone[0], embeddings[1], atol=1e-5, rtol=1e-5)
    assert bool((timestamps[:, 1:] > timestamps[:, :-1]).all())
    scene = module.get_scene_embeddings(audio, model)
    assert scene.shape == (3, model.scene_embedding_size)


@pytest.mark.parametrize("name", MODULES)
def test_long_audio_frames_come_from_the_window_that_owns_them(name, weights):
    module, model = _load(name, weights, windows_per_group=2)
    seconds = 2.5 * model.window_samples / 16000
    audio = _audio(2, seconds, seed=1)
    embeddings, timestamps = module.get_timestamp_embeddings(audio, model)
    with torch.no_grad():
        first, first_times = model.encode(model.prepare(audio)[:, :model.window_samples], model.layer)
    boundary_ms = (model.window_samples - model.hop_samples) / 2 / 16
    owned = first_times < boundary_ms + model.hop_samples / 16
    torch.testing.assert_close(embeddings[:, :int(owned.sum())], first[:, owned], atol=1e-5, rtol=1e-5)
    steps = timestamps[0, 1:] - timestamps[0, :-1]
    assert bool((steps > 0).all()) and float(steps.max() - steps.min()) < 1e-2
    assert float(timestamps[0, -1]) > 1000 * seconds - 1000


@pytest.mark.parametrize("name", MODULES)
def test_layer_option(name, weights):
    module, last = _load(name, weights)
    _, first = _load(name, weights, layer=1)
    audio = _audio(1, 1.0)
    a, _ = module.get_timestamp_embeddings(audio, last)
    b, _ = module.get_timestamp_embeddings(audio, first)
    assert a.shape == b.shape and not torch.allclose(a, b)
    with pytest.raises(ValueError, match="layer must be an integer from 1 to"):
        _load(name, weights, layer=last.num_layers + 1)
    with pytest.raises(ValueError, match="unknown model option"):
        _load(name, weights, colour="blue")
    with pytest.raises(ValueError, match="hear_embed only"):
        _load(name, weights, quantize="int8")


@pytest.mark.parametrize("name", MODULES)
@pytest.mark.parametrize("bad, message", [
    (torch.zeros(16000), "shape"), (torch.zeros(1, 16000, dtype=torch.float64), "float32"),
    (torch.full((1, 16000), float("nan")), "NaN"), (torch.zeros(1, 10), "at least"),
])
def test_bad_audio_is_a_clear_value_error(name, weights, bad, message):
    module, model = _load(name, weights)
    with pytest.raises(ValueError, match=message):
        module.get_timestamp_embeddings(bad, model)


def test_window_starts_cover_the_clip():
    assert common.window_starts(100, 40, 30) == [0, 30, 60]
    assert common.window_starts(40, 40, 30) == [0]


VALIDATOR = Path(sys.executable).with_name("hear-validator")


@pytest.mark.slow
@pytest.mark.heareval
@pytest.mark.skipif(not VALIDATOR.exists(), reason="hear-validator is not installed (make venv installs it)")
@pytest.mark.parametrize("name", MODULES)
def test_hear_validator_accepts_the_module(name, weights, tmp_path):
    env = {key: value for key, value in os.environ.items() if key != "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["PYTHONPATH"] = str(REPO)
    done = subprocess.run([str(VALIDATOR), f"eval.baselines.{name}", "--model", str(weights[name]), "--device", "cpu"],
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert done.returncode == 0 and "Looks good!" in done.stdout, (done.stdout + done.stderr)[-4000:]


def test_ast_features_equal_the_feature_extractor():
    """Our torch fbank + padding + normalisation against ``ASTFeatureExtractor`` (its own fbank)."""
    import transformers

    from eval.baselines import ast

    model = ast.ASTBaseline(transformers.ASTModel(transformers.ASTConfig(hidden_size=32, num_hidden_layers=1,
                                                                         num_attention_heads=2, intermediate_size=64)), {})
    audio = _audio(1, 3.0, seed=2)
    theirs = transformers.ASTFeatureExtractor()(audio[0].numpy(), sampling_rate=16000, return_tensors="pt")
    np_error = (model.features(audio) - theirs["input_values"]).abs()
    assert np_error.shape == (1, 1024, 128)
    assert float(np_error.max()) <= 1e-3
