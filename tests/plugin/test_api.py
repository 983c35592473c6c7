"""The HEAR API face: shapes, dtypes, timestamps, options, input validation, long audio == plain (small fixture
model). Parity with the authors' reference outputs through the API is in test_parity.py."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hear_embed import get_scene_embeddings, get_timestamp_embeddings, load_model
from hear_embed.api import SCENE_POOLINGS, timestamp_embeddings_of_blocks
from hear_embed.long_audio import summarize, tensor_blocks, windowed_hidden

SAMPLES_PER_FRAME = 320  # one encoder frame = 2 spectrogram hops of 160 samples


@pytest.fixture(scope="module")
def checkpoint(parity_dir):
    return str(parity_dir / "acoustic_model_small.pth")


@pytest.fixture(scope="module")
def model(checkpoint):
    return load_model(checkpoint)


def noise(n_sounds: int, n_samples: int, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(n_sounds, n_samples, generator=generator) * 2 - 1


def plain_hidden(model, audio: torch.Tensor, num_layers: int | None = None) -> torch.Tensor:
    """The reference computation: Frontend on whole clips, then AcousticModel.forward."""
    with torch.no_grad():
        hidden, _ = model.acoustic_model(model.frontend(audio), num_layers=num_layers)
    return hidden


@pytest.mark.parametrize("seconds", [0.1, 2.0, 7.5])
def test_timestamp_embeddings_shape_dtype_and_times(model, seconds):
    audio = noise(3, int(seconds * model.sample_rate))
    embeddings, timestamps = get_timestamp_embeddings(audio, model)
    frames = (audio.shape[1] // 160 + 1) // 2
    assert embeddings.shape == (3, frames, model.timestamp_embedding_size)
    assert timestamps.shape == (3, frames)
    assert embeddings.dtype == torch.float32 and timestamps.dtype == torch.float32
    assert torch.isfinite(embeddings).all()
    expected = 5.0 + 20.0 * torch.arange(frames, dtype=torch.float32)
    assert torch.equal(timestamps, expected.expand(3, frames))


def test_same_input_same_output(model):
    audio = noise(2, 16000)
    first, _ = get_timestamp_embeddings(audio, model)
    second, _ = get_timestamp_embeddings(audio.clone(), model)
    assert torch.equal(first, second)


@pytest.mark.parametrize("seconds", [1.0, 7.0])
def test_batch_equals_single_calls(model, seconds):
    audio = noise(3, int(seconds * model.sample_rate), seed=1)
    batched, _ = get_timestamp_embeddings(audio, model)
    for index in range(3):
        single, _ = get_timestamp_embeddings(audio[index: index + 1], model)
        torch.testing.assert_close(batched[index], single[0], atol=1e-5, rtol=0)


def test_numpy_input_accepted(model):
    audio = noise(2, 8000)
    from_numpy, _ = get_timestamp_embeddings(audio.numpy(), model)
    from_torch, _ = get_timestamp_embeddings(audio, model)
    torch.testing.assert_close(from_numpy, from_torch, atol=0, rtol=0)


@pytest.mark.parametrize("pooling", SCENE_POOLINGS)
def test_scene_is_pooled_timestamps(checkpoint, pooling):
    model = load_model(checkpoint, scene_pooling=pooling)
    audio = noise(4, 24000, seed=2)
    scene = get_scene_embeddings(audio, model)
    frames, _ = get_timestamp_embeddings(audio, model)
    parts = {"mean": frames.mean(1), "max": frames.max(1).values, "std": frames.std(1, unbiased=False)}
    expected = torch.cat([parts[name] for name in pooling.split("+")], dim=1)
    assert scene.shape == (4, model.scene_embedding_size) and scene.dtype == torch.float32
    torch.testing.assert_close(scene, expected, atol=1e-6, rtol=0)


def test_scene_embedding_size_follows_pooling(checkpoint):
    sizes = {pooling: load_model(checkpoint, scene_pooling=pooling).scene_embedding_size for pooling in SCENE_POOLINGS}
    assert sizes == {"mean": 64, "max": 64, "mean+max": 128, "mean+std": 128}


@pytest.mark.parametrize("seconds", [1.0, 7.0])
def test_layer_option_selects_transformer_layer(checkpoint, model, seconds):
    audio = noise(2, int(seconds * 16000), seed=3)
    first_layer, _ = get_timestamp_embeddings(audio, load_model(checkpoint, layer=1))
    last_layer, _ = get_timestamp_embeddings(audio, load_model(checkpoint, layer=2))
    default, _ = get_timestamp_embeddings(audio, model)
    torch.testing.assert_close(first_layer, plain_hidden(model, audio, num_layers=1), atol=1e-5, rtol=0)
    assert torch.equal(last_layer, default)
    assert (first_layer - default).abs().max() > 0.1


@pytest.mark.parametrize("options, message", [
    ({"layer": 0}, "layer must be an integer from 1 to 2"),
    ({"layer": 3}, "layer must be an integer from 1 to 2"),
    ({"layer": "2"}, "layer must be an integer"),
    ({"scene_pooling": "median"}, "scene_pooling must be one of"),
    ({"windows_per_group": 0}, "windows_per_group must be a positive integer"),
    ({"pooling": "mean"}, "unknown model option(s) ['pooling']"),
    ({"quantize": "int4"}, "quantize must be 'none' or 'int8'"),
])
def test_bad_options_raise(checkpoint, options, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        load_model(checkpoint, **options)


def _with_nan_in_clip_1() -> torch.Tensor:
    audio = noise(3, 4000)
    audio[1, 100] = float("nan")
    return audio


def _with_inf_in_clip_2() -> torch.Tensor:
    audio = noise(3, 4000)
    audio[2, -1] = float("inf")
    return audio


@pytest.mark.parametrize("make_audio, message", [
    (lambda: [[0.0] * 4000], "must be a torch.Tensor or numpy.ndarray"),
    (lambda: noise(1, 4000)[0], "must have shape \\(n_sounds, n_samples\\), got 1 dimension"),
    (lambda: noise(1, 4000)[None], "got 3 dimension"),
    (lambda: (noise(1, 4000) * 1000).to(torch.int16), "must be float32.*torch.int16"),
    (lambda: noise(1, 4000).double(), "must be float32.*torch.float64"),
    (lambda: noise(1, 4000).numpy().astype(np.float64), "must be float32.*torch.float64"),
    (_with_nan_in_clip_1, "NaN or Inf in clip\\(s\\) \\[1\\]"),
    (_with_inf_in_clip_2, "NaN or Inf in clip\\(s\\) \\[2\\]"),
    (lambda: torch.zeros(0, 4000), "empty batch"),
    (lambda: noise(2, 512), "512 samples long; at least 513 samples"),
])
def test_bad_audio_raises(model, make_audio, message):
    with pytest.raises(ValueError, match=message):
        get_timestamp_embeddings(make_audio(), model)
    with pytest.raises(ValueError, match=message):
        get_scene_embeddings(make_audio(), model)


def windows_needed(frames: int) -> int:
    return 1 if frames <= 300 else -(-(frames - 300) // 250) + 1


# Samples: the shortest input (2 frames); exactly max_length=300 encoder frames with odd and even spectrogram
# frame counts; 301 (the first windowed length); then 2..5 windows with full and partial last windows, which
# with 2 windows per group covers one group, a multiple of the group size and one either side; with 16 windows
# per group 17 windows (one full group and one more window).
STREAMING_CASES = [(513, 2), (96000, 2), (95840, 2), (96159, 2), (96160, 2), (96320, 2), (550 * 320, 2),
                   (551 * 320 + 100, 2), (800 * 320, 2), (801 * 320, 2), (1000 * 320 + 5, 2), (1050 * 320, 2),
                   (1051 * 320 + 200, 2), (1051 * 320, 1), (4051 * 320, 16)]


@pytest.mark.parametrize("n_samples, windows_per_group", STREAMING_CASES)
def test_streaming_equals_plain(checkpoint, n_samples, windows_per_group):
    model = load_model(checkpoint, windows_per_group=windows_per_group)
    n_sounds = 2 if n_samples < 500_000 else 1
    audio = noise(n_sounds, n_samples, seed=n_samples) * 0.3
    embeddings, timestamps = get_timestamp_embeddings(audio, model)
    expected = plain_hidden(model, audio)
    frames = (n_samples // 160 + 1) // 2
    assert embeddings.shape == expected.shape == (n_sounds, frames, 64)
    assert timestamps.shape == (n_sounds, frames)
    torch.testing.assert_close(embeddings, expected, atol=1e-5, rtol=1e-5)


def numpy_blocks(audio: torch.Tensor, block_samples: int):
    """A block source of numpy arrays of ``block_samples`` samples (as a file reader gives them), counting calls."""
    def source():
        source.calls += 1
        return (block.numpy() for block in audio.split(block_samples, dim=-1))
    source.calls = 0
    return source


@pytest.mark.parametrize("n_samples, windows_per_group", [STREAMING_CASES[0], STREAMING_CASES[3],
                                                          STREAMING_CASES[6], STREAMING_CASES[-2]])
@pytest.mark.parametrize("block_samples", [513, 23_777, 1 << 20])
@pytest.mark.parametrize("loud", [False, True])
def test_block_source_equals_whole_array(checkpoint, n_samples, windows_per_group, block_samples, loud):
    """Audio handed over block by block (any block size, numpy blocks) gives exactly the numbers of the same audio
    as one tensor, short or windowed, rescaled when loud enough to overflow; the source is read once per pass."""
    model = load_model(checkpoint, windows_per_group=windows_per_group)
    audio = noise(2, n_samples, seed=n_samples) * (1e20 if loud else 0.3)
    expected, expected_times = get_timestamp_embeddings(audio, model)
    source = numpy_blocks(audio, block_samples)
    embeddings, timestamps = timestamp_embeddings_of_blocks(source, model)
    assert torch.equal(embeddings, expected) and torch.equal(timestamps, expected_times)
    assert source.calls == (2 if n_samples <= 96320 else 3)
    if not loud:
        torch.testing.assert_close(embeddings, plain_hidden(model, audio), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("changed_on_call, samples, message", [
    (2, 3_199_000, "gave 3199000 samples on a later pass but 3200000"),
    (3, 3_199_999, "gave 3199999 samples on a later pass but 3200000"),
    (3, 3_200_005, "gave more than 3200000 samples on a later pass"),
])
def test_block_source_that_changes_between_passes_is_refused(model, changed_on_call, samples, message):
    """A file rewritten while it is read (another length on a later pass) is an error, never mixed output."""
    audio, changed = noise(1, 3_200_000), noise(1, samples, seed=1)
    calls = []

    def source():
        calls.append(None)
        return [changed if len(calls) == changed_on_call else audio]
    with pytest.raises(ValueError, match=message):
        timestamp_embeddings_of_blocks(source, model)


@pytest.mark.parametrize("blocks, message", [
    (lambda: [], "gave no samples"),
    (lambda: [np.zeros((1, 4000), dtype=np.float64)], "block 0 must be a \\(n_sounds, n_samples\\) float32 tensor"),
    (lambda: [torch.zeros(1, 4000), torch.zeros(2, 4000)], "block 1 holds 2 clips, the first block 1"),
    (lambda: [torch.zeros(4000)], "block 0 must be"),
    (lambda: [torch.zeros(1, 300), torch.zeros(1, 200)], "500 samples long; at least 513"),
    (lambda: [noise(3, 4000), _with_inf_in_clip_2()[:, -100:]], "NaN or Inf in clip\\(s\\) \\[2\\]"),
])
def test_bad_block_source_raises(model, blocks, message):
    with pytest.raises(ValueError, match=message):
        timestamp_embeddings_of_blocks(blocks, model)


def test_streaming_cases_cover_the_window_counts():
    counts = {(windows_needed((n // 160 + 1) // 2), group) for n, group in STREAMING_CASES}
    assert {(1, 2), (2, 2), (3, 2), (4, 2), (5, 2), (17, 16)} <= counts


@pytest.mark.parametrize("chunk_frames", [37, 500])
def test_streaming_statistics_chunking(model, chunk_frames):
    audio = noise(1, 700 * SAMPLES_PER_FRAME + 33, seed=4)
    source = tensor_blocks(audio)
    hidden = windowed_hidden(model.frontend, model.acoustic_model, source, summarize(source), windows_per_group=3,
                             stats_chunk_frames=chunk_frames)
    torch.testing.assert_close(hidden, plain_hidden(model, audio), atol=1e-5, rtol=1e-5)


def test_streaming_with_layer_option(checkpoint):
    model = load_model(checkpoint, layer=1, windows_per_group=2)
    audio = noise(1, 900 * SAMPLES_PER_FRAME, seed=5)
    embeddings, _ = get_timestamp_embeddings(audio, model)
    torch.testing.assert_close(embeddings, plain_hidden(model, audio, num_layers=1), atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("frames", [150, 1000])
def test_cuda_matches_cpu(checkpoint, model, frames):
    audio = noise(2, frames * SAMPLES_PER_FRAME, seed=6)
    on_gpu = load_model(checkpoint).to("cuda")
    embeddings, timestamps = get_timestamp_embeddings(audio.cuda(), on_gpu)
    assert embeddings.device.type == "cuda" and timestamps.device.type == "cuda"
    cpu_embeddings, _ = get_timestamp_embeddings(audio, model)
    torch.testing.assert_close(embeddings.cpu(), cpu_embeddings, atol=1e-4, rtol=1e-4)
    # audio on the CPU with the model on the GPU: computed there, returned on the CPU
    returned, _ = get_timestamp_embeddings(audio, on_gpu)
    assert returned.device.type == "cpu"


def test_int8_option_stays_close_to_fp32(checkpoint):
    """quantize="int8" swaps in dynamic int8 Linear layers: different numbers, same embedding up to ~1e-2 cosine."""
    audio = torch.randn(2, 16000, generator=torch.Generator().manual_seed(3))
    fp32, _ = get_timestamp_embeddings(audio, load_model(checkpoint))
    int8, _ = get_timestamp_embeddings(audio, load_model(checkpoint, quantize="int8"))
    assert not torch.equal(fp32, int8)
    cosine = torch.nn.functional.cosine_similarity(fp32, int8, dim=-1)
    assert cosine.min() > 0.99


def test_default_scene_pooling_is_mean_and_std(checkpoint):
    """The default chosen in results/pooling_study/README.md: mean and population std over time, concatenated."""
    model = load_model(checkpoint)
    assert model.options.scene_pooling == "mean+std"
    assert model.scene_embedding_size == 2 * model.timestamp_embedding_size


def test_timestamps_and_minimum_length_have_one_definition(model):
    """The teacher interpolation aims at the API's own frame times (an embedding given at exactly those times comes
    back unchanged), and the export accepts the same shortest input as the API."""
    from hear_embed.export import MIN_SAMPLES
    from hear_embed.train.teachers import interpolate_to_frames

    audio = noise(1, 3 * model.sample_rate)
    embeddings, timestamps = get_timestamp_embeddings(audio, model)
    torch.testing.assert_close(interpolate_to_frames(embeddings, timestamps, embeddings.shape[1]), embeddings)
    shifted = interpolate_to_frames(embeddings, timestamps + 10.0, embeddings.shape[1])
    assert not torch.allclose(shifted[:, 1:], embeddings[:, 1:])
    assert MIN_SAMPLES == model.min_samples == 513
    get_timestamp_embeddings(noise(1, MIN_SAMPLES), model)
    with pytest.raises(ValueError, match="at least 513 samples"):
        get_timestamp_embeddings(noise(1, MIN_SAMPLES - 1), model)
