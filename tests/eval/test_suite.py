"""eval.suites.mini: deterministic, versioned, valid HEAR task folders from takes 0-9 of FSDD only."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from eval.suites.mini import FSDD_DIR, SIZES, build_mini_suite, fsdd_clip, harmonic_tone
from eval.tasks import find_tasks, validate_task


@pytest.fixture(scope="module")
def tiny_suites(tmp_path_factory):
    """The tiny suite built twice, in two different folders."""
    return [build_mini_suite(tmp_path_factory.mktemp(f"build{i}"), size="tiny") for i in range(2)]


def test_shipped_fsdd_subset_is_takes_0_to_9_only():
    names = sorted(path.name for path in FSDD_DIR.glob("*.wav"))
    takes = [int(re.fullmatch(r"\d_[a-z]+_(\d+)\.wav", name).group(1)) for name in names]
    assert len(names) == 600 and max(takes) == 9
    assert (FSDD_DIR.parent / "SOURCE.md").read_text().count("CC BY-SA 4.0") >= 1
    with pytest.raises(ValueError, match="reserved for pretraining"):
        fsdd_clip(3, "theo", 10)


def test_build_is_deterministic(tiny_suites):
    first, second = (json.loads((suite / "manifest.json").read_text()) for suite in tiny_suites)
    assert first["hash"] == second["hash"] and first["files"] == second["files"]
    assert len(first["files"]) > 50


def test_every_task_validates_with_the_documented_layout(tiny_suites):
    suite = tiny_suites[0]
    tasks = {folder.name: validate_task(folder, 16000) for folder in find_tasks(suite)}
    assert set(tasks) == {"fsdd_digits", "fsdd_speakers", "fsdd_events", "synth_pitch"}
    assert tasks["fsdd_speakers"].split_mode == "new_split_kfold"
    assert tasks["fsdd_events"].evaluation == ("event_onset_200ms_fms", "segment_1s_er")
    assert tasks["synth_pitch"].evaluation[0] == "pitch_acc"
    assert all(task.label_vocab[i] == str(48 + i) for task in [tasks["synth_pitch"]] for i in range(24))
    used = [filename for task in ("fsdd_digits", "fsdd_speakers") for split in tasks[task].splits
            for filename in tasks[task].labels(split)]
    assert used and all(int(name.split("_")[2][:-4]) <= 9 for name in used)  # never a pretraining take
    digits = tasks["fsdd_digits"]
    takes = {split: {int(name.split("_")[2][:-4]) for name in digits.labels(split)} for split in digits.splits}
    assert takes == {"train": set(range(6)), "valid": {6, 7}, "test": {8, 9}}  # take-disjoint splits
    events = tasks["fsdd_events"]
    for split in events.splits:
        for clip_events in events.labels(split).values():
            assert all(0 <= e["start"] < e["end"] <= 2000.0 for e in clip_events)


def test_tiny_size_is_small_and_full_size_is_declared():
    assert SIZES["full"].event_clips == (24, 8, 8) and SIZES["tiny"].event_clips == (6, 3, 3)


@pytest.mark.parametrize("frequency", [130.8, 440.0, 987.8])
def test_synthetic_tones_have_the_requested_pitch(frequency):
    tone = harmonic_tone(np.random.default_rng(1), frequency, 1.0)
    spectrum = np.abs(np.fft.rfft(tone * np.hanning(len(tone))))
    peaks = np.flatnonzero(spectrum > 0.2 * spectrum.max())
    assert abs(peaks.min() - frequency) <= 2  # 1 Hz bins; the lowest strong partial is the fundamental
