"""Resemblyzer, silero-vad and basic-pitch teachers on real clips, checked against each package's own inference.

The weights are the files inside the installed packages (``pip install .[teachers]``); without a package its
tests are skipped. The adapters themselves never import the packages.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from hear_embed.audio_io import read_audio
from hear_embed.frontend import encoder_frame_count
from hear_embed.train.teachers import build_teacher
from hear_embed.train.wheel_teachers import BasicPitchTeacher, ResemblyzerTeacher, SileroVadTeacher
from tests.builders.paths import FIXTURES

AUDIO = FIXTURES / "audio"


def package_file(package: str, relative: str) -> Path:
    """A data file of an installed package (found without importing it); skips the test when not installed."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"{package} is not installed (pip install .[teachers])")
    return Path(list(spec.submodule_search_locations)[0]) / relative


RESEMBLYZER = ("resemblyzer", "pretrained.pt")
SILERO = ("silero_vad", "data/silero_vad.onnx")
BASIC_PITCH = ("basic_pitch", "saved_models/icassp_2022/nmp.onnx")


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """1.9 s of real speech at 16 kHz: the four FSDD fixture clips one after another."""
    return np.concatenate([read_audio(path, 16000) for path in sorted(AUDIO.glob("*.wav"))]).astype(np.float32)


def test_resemblyzer_partials_match_the_package(speech):
    resemblyzer = pytest.importorskip("resemblyzer")
    checkpoint = package_file(*RESEMBLYZER)
    teacher = build_teacher({"kind": "resemblyzer", "checkpoint": str(checkpoint)})
    assert isinstance(teacher, ResemblyzerTeacher)
    encoder = resemblyzer.VoiceEncoder("cpu", weights_fpath=checkpoint, verbose=False)
    _, expected, _ = encoder.embed_utterance(speech, return_partials=True, rate=10.0)  # 10 mel frames per step
    embeddings, starts = teacher.partial_embeddings(torch.from_numpy(speech))
    assert len(starts) == len(expected) == 4
    np.testing.assert_allclose(embeddings.numpy(), expected, atol=2e-5)

    short = len(speech) // 2
    batch = torch.stack([torch.from_numpy(speech), torch.from_numpy(speech)])
    features = teacher(batch, torch.tensor([len(speech), short]))
    assert features.shape == (2, encoder_frame_count(len(speech)), 256)
    torch.testing.assert_close(features[0, 0], embeddings[0])  # before the first partial's centre: the first partial
    assert features[1, encoder_frame_count(short):].abs().max() == 0
    torch.testing.assert_close(features[1, 0], teacher.partial_embeddings(batch[1, :short])[0][0])


def test_silero_vad_matches_the_package_chunk_by_chunk(speech):
    silero_vad = pytest.importorskip("silero_vad")
    model_file = package_file(*SILERO)
    teacher = build_teacher({"kind": "silero_vad", "model": str(model_file)})
    chunks = len(speech) // 512
    audio = torch.from_numpy(speech[: chunks * 512])
    reference = silero_vad.load_silero_vad(onnx=True)
    expected_probability, expected_state = [], []
    for index in range(chunks):
        expected_probability.append(float(reference(audio[index * 512: (index + 1) * 512], 16000)))
        expected_state.append(reference._state[0, 0].clone())
    other = torch.flip(audio, dims=[0])  # a second, different clip in the batch must not change the first
    probability, state = teacher.run(torch.stack([audio, other]))
    np.testing.assert_allclose(probability[0].numpy(), expected_probability, atol=1e-5)
    torch.testing.assert_close(state[0], torch.stack(expected_state), atol=1e-5, rtol=1e-4)
    assert max(expected_probability) > 0.5 > min(expected_probability)  # speech and pauses: a real test of the state
    features = teacher(audio[None], torch.tensor([len(audio)]))
    assert features.shape == (1, encoder_frame_count(len(audio)), 128)
    torch.testing.assert_close(features[0, 0], state[0, 0])  # frame 0 (5 ms) precedes the first chunk's centre


def test_basic_pitch_matches_the_package(speech, tmp_path):
    inference = pytest.importorskip("basic_pitch.inference")
    model_file = package_file(*BASIC_PITCH)
    teacher = build_teacher({"kind": "basic_pitch", "model": str(model_file)})
    audio = np.concatenate([speech, np.sin(2 * np.pi * 440 * np.arange(16000) / 16000).astype(np.float32) * 0.5])
    import soxr

    audio_22k = soxr.resample(audio, 16000, 22050, quality="HQ").astype(np.float32)  # 2.9 s: two windows
    sf.write(tmp_path / "clip.wav", audio_22k, 22050, subtype="FLOAT")  # read back unchanged by librosa.load
    expected = inference.run_inference(str(tmp_path / "clip.wav"), inference.Model(str(model_file)))
    note, onset, contour = teacher.posteriors(audio_22k)
    for got, name in ((note, "note"), (onset, "onset"), (contour, "contour")):
        assert got.shape == expected[name].shape
        np.testing.assert_allclose(got, expected[name], atol=1e-5)
    assert note[-40:].max() > 0.5  # the 440 Hz tone is found as a note
    features = teacher(torch.from_numpy(audio)[None], torch.tensor([len(audio)]))
    assert features.shape == (1, encoder_frame_count(len(audio)), 440)
    short = len(speech) // 2  # one batched call over all windows == clip by clip
    batch = teacher(torch.stack([torch.from_numpy(audio), torch.from_numpy(audio)]), torch.tensor([len(audio), short]))
    torch.testing.assert_close(batch[0], features[0], atol=1e-5, rtol=1e-4)
    alone = teacher(torch.from_numpy(audio[:short])[None], torch.tensor([short]))
    torch.testing.assert_close(batch[1, : alone.shape[1]], alone[0], atol=1e-5, rtol=1e-4)
    assert batch[1, alone.shape[1]:].abs().max() == 0


@pytest.mark.parametrize("kind, key", [("resemblyzer", "checkpoint"), ("silero_vad", "model"), ("basic_pitch", "model")])
def test_a_wrong_file_is_named(kind, key, tmp_path):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("librosa")
    wrong = tmp_path / "wrong.bin"
    torch.save({"weight": torch.zeros(2)}, wrong)
    with pytest.raises(ValueError, match="wrong.bin"):
        build_teacher({"kind": kind, key: str(wrong)})
