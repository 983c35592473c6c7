"""BEATs and the Kaldi fbank against the official code's outputs (``../shared/fixtures/baseline_parity``).

The fbank matches torchaudio's to float32 rounding except in a few low-energy low-frequency bins, where the
power spectrum is ill-conditioned (relative errors of 1e-3 in energies 1e-5 of the frame's): we assert the 99.9th
percentile at 1e-4 / 1e-3 and the maximum at 5e-4 / 2e-3 (normalised BEATs values / hanning, natural log). The encoder
is checked from the reference fbank (<= 1e-4: the encoder itself) and end to end (<= 2e-4).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from eval.baselines import beats
from eval.baselines.fbank import FbankOptions, fbank
from tests.builders.paths import FIXTURES, SHARED

PARITY = SHARED / "fixtures" / "baseline_parity"
SHIPPED = FIXTURES / "baseline_parity" / "fbank_clip0.npz"
needs_shared = pytest.mark.skipif(not (PARITY / "reference_outputs.npz").is_file(),
                                  reason=f"{PARITY} is not present")
CLIPS = range(4)


def test_shipped_fbank_copy_matches_both_variants():
    """Runs without ../shared: clip 0 of the official fbanks, shipped in tests/fixtures/baseline_parity."""
    with np.load(SHIPPED) as data:
        waveform = torch.from_numpy(data["waveform"])[None]
        povey = (fbank(waveform * 2 ** 15, FbankOptions()) - beats.FBANK_MEAN) / (2 * beats.FBANK_STD)
        _assert_fbank_close(povey[0].numpy(), data["fbank"], typical=1e-4, maximum=5e-4)
        hanning = fbank(waveform - waveform.mean(), FbankOptions(window="hanning", htk_compat=True))
        _assert_fbank_close(hanning[0].numpy(), data["fbank_hanning_htk"], typical=1e-3, maximum=2e-3)


@pytest.fixture(scope="module")
def reference() -> dict[str, np.ndarray]:
    with np.load(PARITY / "reference_outputs.npz") as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def hanning() -> dict[str, np.ndarray]:
    with np.load(PARITY / "kaldi_fbank_hanning.npz") as data:
        return {key: data[key] for key in data.files}


@pytest.fixture(scope="module")
def encoder() -> beats.BEATsEncoder:
    return beats.load_checkpoint(PARITY / "beats_small.pt")


def _assert_fbank_close(ours: np.ndarray, theirs: np.ndarray, typical: float, maximum: float) -> None:
    error = np.abs(ours - theirs)
    assert ours.shape == theirs.shape
    assert np.percentile(error, 99.9) <= typical
    assert error.max() <= maximum


@needs_shared
@pytest.mark.parametrize("clip", CLIPS)
def test_povey_fbank_matches_beats_preprocess(reference, clip):
    waveform = torch.from_numpy(reference[f"clip{clip}_waveform"])[None]
    ours = (fbank(waveform * 2 ** 15, FbankOptions()) - beats.FBANK_MEAN) / (2 * beats.FBANK_STD)
    _assert_fbank_close(ours[0].numpy(), reference[f"clip{clip}_fbank"], typical=1e-4, maximum=5e-4)


@needs_shared
@pytest.mark.parametrize("clip", CLIPS)
def test_hanning_htk_fbank_matches_kaldi(hanning, clip):
    waveform = torch.from_numpy(hanning[f"clip{clip}_waveform"])[None]
    ours = fbank(waveform - waveform.mean(), FbankOptions(window="hanning", htk_compat=True))
    _assert_fbank_close(ours[0].numpy(), hanning[f"clip{clip}_fbank_hanning_htk"], typical=1e-3, maximum=2e-3)


def test_fbank_energy_column_position():
    waveform = 0.1 * torch.randn(2, 4000, generator=torch.Generator().manual_seed(0))
    plain = fbank(waveform, FbankOptions())
    first = fbank(waveform, FbankOptions(use_energy=True))
    last = fbank(waveform, FbankOptions(use_energy=True, htk_compat=True))
    assert torch.equal(first[..., 1:], plain) and torch.equal(last[..., :-1], plain)
    assert torch.equal(first[..., 0], last[..., -1])


@pytest.mark.parametrize("bad, message", [(torch.zeros(10, 399), "at least 400"), (torch.zeros(400), "batch")])
def test_fbank_rejects_bad_shapes(bad, message):
    with pytest.raises(ValueError, match=message):
        fbank(bad, FbankOptions())


@needs_shared
@pytest.mark.parametrize("clip", CLIPS)
def test_every_layer_matches_from_the_reference_fbank(encoder, reference, clip):
    with torch.no_grad():
        hidden, _ = encoder.from_fbank(torch.from_numpy(reference[f"clip{clip}_fbank"])[None])
    for layer in range(4):
        np.testing.assert_allclose(hidden[layer][0].numpy(), reference[f"clip{clip}_layer{layer}"], atol=1e-4, rtol=0)
    np.testing.assert_allclose(hidden[-1][0].numpy(), reference[f"clip{clip}_features"], atol=1e-4, rtol=0)


@needs_shared
@pytest.mark.parametrize("clip", CLIPS)
def test_end_to_end_from_the_waveform(encoder, reference, clip):
    with torch.no_grad():
        hidden, _ = encoder(torch.from_numpy(reference[f"clip{clip}_waveform"])[None])
    np.testing.assert_allclose(hidden[-1][0].numpy(), reference[f"clip{clip}_features"], atol=2e-4, rtol=0)


@needs_shared
def test_padded_batch_matches(encoder, reference):
    with torch.no_grad():
        hidden, mask = encoder(torch.from_numpy(reference["batch_waveforms"]),
                               torch.from_numpy(reference["batch_padding_mask"]))
    np.testing.assert_array_equal(mask.numpy(), reference["batch_feature_padding_mask"])
    np.testing.assert_allclose(hidden[-1].numpy(), reference["batch_features"], atol=1e-4, rtol=0)


@needs_shared
def test_timestamp_embedding_is_the_mean_of_the_8_frequency_patches(encoder, reference):
    model = beats.BEATsModel(encoder)
    waveform = torch.from_numpy(reference["clip1_waveform"])[None]
    embeddings, timestamps = beats.get_timestamp_embeddings(waveform, model)
    features = torch.from_numpy(reference["clip1_features"])  # (120 patches = 15 steps x 8, 192)
    expected = features.view(15, 8, -1).mean(dim=1)
    assert embeddings.shape == (1, 15, 192)
    torch.testing.assert_close(embeddings[0], expected, atol=2e-4, rtol=0)
    torch.testing.assert_close(timestamps[0], 160.0 * torch.arange(15) + 87.5)


def test_checkpoint_errors_name_the_problem(tmp_path):
    with pytest.raises(ValueError, match="not found"):
        beats.load_model(str(tmp_path / "missing.pt"))
    bad = tmp_path / "bad.pt"
    torch.save({"model": {}}, bad)
    with pytest.raises(ValueError, match="'cfg' and 'model'"):
        beats.load_model(str(bad))
    with pytest.raises(ValueError, match="needs a checkpoint"):
        beats.load_model("")
