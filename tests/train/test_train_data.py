"""Training data: file discovery, deterministic and resumable batches, crops, and unreadable files skipped."""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import soundfile
import torch

from hear_embed.train.data import CroppedAudio, DataConfig, SkipCounter, StepSampler, collate, list_audio_files
from tests.builders.training import training_clips, write_manifest


@pytest.fixture(scope="module")
def clips():
    return training_clips(8)


def test_manifest_and_exclusion(tmp_path, clips):
    manifest = write_manifest(tmp_path, clips)
    files = list_audio_files(DataConfig(sources=(str(manifest),)))
    assert files == sorted(clips)
    excluded = list_audio_files(DataConfig(sources=(str(manifest),), exclude_patterns=(clips[0].name,)))
    assert clips[0] not in excluded and len(excluded) == len(clips) - 1


def test_missing_source_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        list_audio_files(DataConfig(sources=(str(tmp_path / "nowhere"),)))


@pytest.mark.parametrize("micro_batch,accumulation,world_size", [(4, 1, 1), (2, 1, 2), (1, 2, 2), (2, 2, 1)])
def test_global_batch_independent_of_split(micro_batch, accumulation, world_size):
    """Same global batch of 4 per step however it is split over processes and micro-batches."""
    def global_items(start_step=0):
        samplers = [StepSampler(10, micro_batch, accumulation, rank, world_size, seed=3, start_step=start_step)
                    for rank in range(world_size)]
        streams = [iter(s) for s in samplers]
        steps = []
        for _ in range(3):
            items = []
            for _ in range(accumulation):
                for stream in streams:
                    items += next(stream)
            steps.append(sorted(items))
        return steps

    reference = [sorted(StepSampler(10, 4, 1, 0, 1, seed=3).items(step, 0)) for step in range(3)]
    assert global_items() == reference
    assert global_items(start_step=1)[:2] == reference[1:]  # resuming at step 1 continues the stream


def test_epochs_cover_every_file_once():
    sampler = StepSampler(10, 5, 1, 0, 1, seed=0)
    first_epoch = [index for step in range(2) for index, _ in sampler.items(step, 0)]
    assert sorted(first_epoch) == list(range(10))
    assert first_epoch != [index for step in range(2, 4) for index, _ in sampler.items(step, 0)]


def test_crops_resampling_and_padding(tmp_path):
    long_file = tmp_path / "long.flac"
    soundfile.write(long_file, np.random.default_rng(0).standard_normal(44100 * 3).astype("float32") * 0.1, 44100)
    short_file = tmp_path / "short.wav"
    soundfile.write(short_file, np.zeros((8000, 2), dtype="float32"), 8000)  # stereo, 1 s at 8 kHz
    dataset = CroppedAudio([long_file, short_file], DataConfig(crop_seconds=2.0))
    crop, seed = dataset[(0, 7)]
    assert crop.shape == (32000,) and seed == 7
    assert np.array_equal(dataset[(0, 7)][0], crop) and not np.array_equal(dataset[(0, 8)][0], crop)
    batch = collate([dataset[(0, 7)], dataset[(1, 9)]])
    assert batch["waveform"].shape == (2, 32000)
    assert batch["lengths"].tolist() == [32000, 16000] and batch["seeds"].tolist() == [7, 9]
    assert torch.all(batch["waveform"][1, 16000:] == 0)


def test_unreadable_file_is_skipped_with_warning(tmp_path, clips):
    broken = tmp_path / "broken.wav"
    broken.write_bytes(b"RIFF not really a wav file")
    dataset = CroppedAudio([clips[0], broken], DataConfig(crop_seconds=1.0))
    batch = collate([dataset[(0, 1)], dataset[(1, 2)]])
    assert batch["waveform"].shape[0] == 1 and len(batch["skipped"]) == 1
    counter = SkipCounter()
    with pytest.warns(UserWarning, match="broken.wav"):
        counter.update(batch["skipped"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same file warns only once, but is still counted
        counter.update(batch["skipped"])
    assert counter.count == 2
