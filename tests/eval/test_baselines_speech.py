"""wav2vec2 / HuBERT / WavLM / data2vec-audio modules equal the library's own forward.

Small random configs (base-like 20 ms frame rate) go through ``save_pretrained`` -> ``load_model(folder)`` (the code path of real weights);
the base configs (random weights, ``load_model("random")``) are checked once per family (slow-ish).
"""
from __future__ import annotations

import importlib
import json

import pytest
import torch

from tests.builders.baselines import small_folder

MODULES = ["wav2vec2", "hubert", "wavlm", "data2vec_audio"]


def _module(name: str):
    return importlib.import_module(f"eval.baselines.{name}")


def _audio(n: int, samples: int, seed: int = 0) -> torch.Tensor:
    return 0.1 * torch.randn(n, samples, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", MODULES)
def test_small_folder_equals_last_hidden_state(name, tmp_path):
    folder, reference = small_folder(name, tmp_path / name)
    module = _module(name)
    model = module.load_model(str(folder))
    audio = _audio(3, 16000)
    embeddings, timestamps = module.get_timestamp_embeddings(audio, model)
    with torch.no_grad():
        expected = reference(audio).last_hidden_state
    torch.testing.assert_close(embeddings, expected, atol=1e-5, rtol=0)
    stride, receptive = 320, 10 + 63 * 5  # kernels (10, 64), strides (5, 64): 50 frames per second
    torch.testing.assert_close(timestamps[0, :3], torch.tensor([0.0, stride, 2 * stride]) / 16 + (receptive - 1) / 32)
    with torch.no_grad():
        first = reference(audio, output_hidden_states=True).hidden_states[1]
    torch.testing.assert_close(module.get_timestamp_embeddings(audio, module.load_model(str(folder), layer=1))[0],
                               first, atol=1e-5, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("name", MODULES)
def test_base_config_equals_last_hidden_state(name):
    module = _module(name)
    model = module.load_model("random")
    assert 90e6 < sum(p.numel() for p in model.parameters()) < 100e6
    audio = _audio(2, 16000)
    embeddings, timestamps = module.get_timestamp_embeddings(audio, model)
    with torch.no_grad():
        expected = model.model(audio).last_hidden_state
    assert embeddings.shape == (2, 49, 768)
    torch.testing.assert_close(embeddings, expected, atol=1e-4, rtol=0)
    torch.testing.assert_close(timestamps[0, :2], torch.tensor([12.46875, 32.46875]))


def test_normalisation_follows_the_preprocessor_config(tmp_path):
    folder, reference = small_folder("wav2vec2", tmp_path / "w")
    (folder / "preprocessor_config.json").write_text(json.dumps({"do_normalize": True}))
    module = _module("wav2vec2")
    audio = 3.0 * _audio(2, 8000) + 0.5
    embeddings, _ = module.get_timestamp_embeddings(audio, module.load_model(str(folder)))
    normalised = (audio - audio.mean(1, keepdim=True)) / torch.sqrt(audio.var(1, keepdim=True, unbiased=False) + 1e-7)
    with torch.no_grad():
        torch.testing.assert_close(embeddings, reference(normalised).last_hidden_state, atol=1e-5, rtol=0)


def test_folder_errors_name_the_problem(tmp_path):
    folder, _ = small_folder("hubert", tmp_path / "h")
    with pytest.raises(ValueError, match="model_type is 'hubert'"):
        _module("wav2vec2").load_model(str(folder))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no config.json"):
        _module("hubert").load_model(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="neither a save_pretrained folder nor a hub id"):
        _module("wavlm").load_model(str(tmp_path / "weights.bin"))


def test_offline_hub_id_names_the_files_needed(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ValueError, match=r"facebook/wav2vec2-base.*config.json, model.safetensors"):
        _module("wav2vec2").load_model("facebook/wav2vec2-base")
